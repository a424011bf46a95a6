"""Hugging Face in, Hugging Face out: the config describes the cut model, folders load anywhere."""

from __future__ import annotations

import json

import pytest
import torch

import shrink
from hf_models import FAMILIES, HF_MODELS, transformers
from shrink.layers import hf_config

CAUSAL = ("gpt2", "llama", "mixtral", "gpt_neox", "opt", "mistral", "qwen2", "falcon", "phi", "phi3", "bloom")


def _main(out):
    for key in ("logits", "last_hidden_state"):
        if getattr(out, key, None) is not None:
            return out[key]
    raise AssertionError(f"no main output in {type(out).__name__}")


def _auto(name):
    if name in CAUSAL:
        return transformers.AutoModelForCausalLM
    return {"bert": transformers.AutoModel, "roberta": transformers.AutoModel, "distilbert": transformers.AutoModel,
            "t5": transformers.AutoModelForSeq2SeqLM, "bart": transformers.AutoModelForSeq2SeqLM,
            "whisper": transformers.AutoModelForSpeechSeq2Seq,
            "vit": transformers.AutoModelForImageClassification,
            "swin": transformers.AutoModelForImageClassification}[name]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_save_pretrained_round_trip_at_defaults(name, tmp_path):
    factory, inputs = FAMILIES[name]
    torch.manual_seed(0)
    model, x = factory().eval(), inputs()
    result = shrink.compress(model, x, ratio=0.5)
    assert result.plan.settings["uniform"] is True
    assert result.after.params <= result.before.params
    folder = shrink.save_pretrained(result, tmp_path / "out")
    loaded = _auto(name).from_pretrained(folder).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        y0, y1, y2 = _main(model(**x)), _main(result.model(**x)), _main(loaded(**x))
    assert y1.shape == y0.shape
    torch.testing.assert_close(y2, y1, rtol=1e-5, atol=1e-6)
    doc = json.loads((folder / "plan.json").read_text())
    assert doc["saved_as"] == "huggingface" and doc["after"]["params"] == result.after.params


@pytest.mark.parametrize("name", ["gpt2", "llama", "phi", "gpt_neox"])
def test_cut_models_describe_new_sizes(name):
    factory, inputs = FAMILIES[name]
    result = shrink.compress(factory(), inputs(), ratio=0.5)
    assert result.after.params < result.before.params / 2
    cfg = result.model.config
    assert cfg.hidden_size == 16 and cfg.num_attention_heads in (2, 4)
    assert hf_config.check(result.model) == []


@pytest.mark.parametrize("name", ["gpt2", "llama", "phi3", "mixtral"])
def test_generate_is_identical_after_the_round_trip_with_and_without_cache(name, tmp_path):
    factory, inputs = FAMILIES[name]
    torch.manual_seed(0)
    result = shrink.compress(factory(), inputs(), ratio=0.5)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    prompt = inputs()["input_ids"]
    runs = {}
    for label, m in (("memory", result.model), ("loaded", loaded)):
        for cache in (True, False):
            out = m.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=cache, pad_token_id=0)
            runs[label, cache] = out.tolist()
    assert len(runs["memory", True][0]) == prompt.shape[1] + 6
    assert len({json.dumps(v) for v in runs.values()}) == 1, runs


def test_non_uniform_plan_is_refused_with_the_fix(tmp_path):
    factory, inputs = HF_MODELS["llama"]
    result = shrink.compress(factory(), inputs(), ratio={"model.layers.0.mlp.gate_proj": 0.5}, uniform=False)
    with pytest.raises(shrink.ShrinkValueError, match="uniform=True.*shrink.save"):
        shrink.save_pretrained(result, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_uniform_evens_out_a_per_layer_ratio(tmp_path):
    factory, inputs = HF_MODELS["llama"]
    result = shrink.compress(factory(), inputs(), ratio={"model.layers.0.mlp.gate_proj": 0.5,
                                                         "model.layers.1.mlp.gate_proj": 0.25})
    layers = result.model.model.layers
    assert layers[0].mlp.gate_proj.out_features == layers[1].mlp.gate_proj.out_features == 40
    assert result.model.config.intermediate_size == 40
    shrink.save_pretrained(result, tmp_path / "o")


def test_global_scope_chooses_one_count_per_kind(tmp_path):
    factory, inputs = HF_MODELS["llama"]
    result = shrink.compress(factory(), inputs(), ratio=0.5, scope="global")
    sizes = hf_config.measure(result.model)
    assert all(len(v) == 1 for v in sizes.values()), sizes
    assert result.after.params < result.before.params
    loaded = transformers.AutoModelForCausalLM.from_pretrained(shrink.save_pretrained(result, tmp_path / "o"))
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, result.model(**x).logits)


def test_tokenizer_files_travel_with_the_model(tmp_path):
    factory, inputs = HF_MODELS["gpt2"]
    src = tmp_path / "src"
    factory().save_pretrained(src)
    (src / "vocab.json").write_text("{}")
    (src / "merges.txt").write_text("#version: 0.2\n")
    model = transformers.AutoModelForCausalLM.from_pretrained(src)
    out = shrink.save_pretrained(shrink.compress(model, inputs(), ratio=0.5), tmp_path / "out")
    assert (out / "vocab.json").read_text() == "{}" and (out / "merges.txt").is_file()
    assert json.loads((out / "plan.json").read_text())["copied"] == ["merges.txt", "vocab.json"]


def test_mixtral_router_kept_whole_experts_and_heads_cut():
    factory, inputs = FAMILIES["mixtral"]
    model = factory()
    result = shrink.compress(model, inputs(), ratio=0.5)
    moe, moe0 = result.model.model.layers[0].mlp, model.model.layers[0].mlp
    assert moe.gate.weight.shape == moe0.gate.weight.shape
    assert moe.experts.gate_up_proj.shape == (4, 64, 32)  # every expert's FFN: 64 -> 32 units
    assert result.model.config.intermediate_size == 32
    assert result.model.model.layers[0].self_attn.q_proj.out_features == 16  # 8 heads of 4 -> 4 heads
    assert result.model.config.num_attention_heads == 4 and result.model.config.head_dim == 4


def test_save_pretrained_refuses_a_plain_module(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(shrink.ShrinkTypeError, match="shrink.save"):
        shrink.save_pretrained(shrink.compress(net, torch.randn(1, 4)), tmp_path / "o")


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_embeddings_tied_across_encoder_decoder_and_head_are_cut_alike(name):
    factory, inputs = FAMILIES[name]
    model, x = factory(), inputs()
    result = shrink.compress(model, x, ratio=0.5, uniform=False)  # was: "cut differently in its places"
    m = result.model
    shared = m.shared if name == "t5" else m.model.shared
    # the encoder's last hidden state is no task output: the shared width is cut, once, for all places
    assert shared.weight is m.lm_head.weight and shared.weight.shape == (100, m.config.d_model)
    assert shared.embedding_dim == m.lm_head.in_features == m.config.d_model < 32
    assert result.after.params < result.before.params
    with torch.no_grad():
        assert m(**x).logits.shape == model(**x).logits.shape
