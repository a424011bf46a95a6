"""`shrink.compress_folder`: a Hugging Face folder compressed layer by layer from its shards.

The streamed answer must be the in-memory one (same kept indices, bit-identical tensors), an
interrupted run must leave the output as it was, and a damaged folder gets one clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import shrink
from shrink.deploy import stream

transformers = pytest.importorskip("transformers")

VOCAB = 96


def _llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=4))


def _qwen2():
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2))


def _mixtral():
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2))


def _gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=4, n_head=4, n_positions=32, bos_token_id=0, eos_token_id=0))


FAMILIES = {"llama": _llama, "qwen2_gqa": _qwen2, "mixtral": _mixtral, "gpt2_conv1d": _gpt2}


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


def _saved(tmp_path: Path, family: str, dtype=torch.float32) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = FAMILIES[family]().eval().to(dtype)
    src = tmp_path / "src"
    model.save_pretrained(src, max_shard_size="40KB")  # several shards, as every large checkpoint ships
    return model, src


@pytest.mark.parametrize("family, small_vocab", [(f, 40) for f in sorted(FAMILIES)] + [("llama", None)])
def test_streamed_equals_in_memory_bit_for_bit(tmp_path, monkeypatch, family, small_vocab):
    monkeypatch.setattr(stream, "SMALL_VOCAB", small_vocab or 10**9)  # twins after the first: 40 of 96 tokens
    model, src = _saved(tmp_path, family)
    assert (src / "model.safetensors.index.json").is_file()
    result = shrink.compress(model, {"input_ids": torch.randint(0, VOCAB, (1, 16))}, ratio=0.5)
    shrink.save_pretrained(result, tmp_path / "mem")
    report = shrink.compress_folder(src, tmp_path / "streamed", ratio=0.5, max_shard_bytes=20_000)
    mem, streamed = _tensors(tmp_path / "mem"), _tensors(tmp_path / "streamed")
    assert sorted(mem) == sorted(streamed)
    differ = [k for k in mem if mem[k].shape != streamed[k].shape or not torch.equal(mem[k], streamed[k])]
    assert differ == []
    assert report.params_after == sum(t.numel() for t in streamed.values()) < report.params_before
    assert len(list((tmp_path / "streamed").glob("model-*-of-*.safetensors"))) > 1
    index = json.loads((tmp_path / "streamed" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(streamed)
    # The config describes the cut: the folder loads with from_pretrained and runs.
    cls = type(model)
    a = cls.from_pretrained(tmp_path / "mem").config.to_dict()
    b = cls.from_pretrained(tmp_path / "streamed").config.to_dict()
    fields = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
              "num_hidden_layers", "n_embd", "n_inner", "n_head")
    assert {k: a.get(k) for k in fields} == {k: b.get(k) for k in fields}
    plan = json.loads((tmp_path / "streamed" / stream.PLAN).read_text())
    assert plan["streamed"] is True and plan["steps"]


def test_a_bf16_folder_stays_bf16(tmp_path):
    _, src = _saved(tmp_path, "llama", torch.bfloat16)
    shrink.compress_folder(src, tmp_path / "out", ratio=0.5)
    dtypes = {t.dtype for t in _tensors(tmp_path / "out").values()}
    assert dtypes == {torch.bfloat16}


def test_an_interrupted_run_leaves_the_output_as_it_was(tmp_path, monkeypatch):
    _, src = _saved(tmp_path, "llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stream, "_read_back", interrupt)  # Ctrl-C after every shard was written
    with pytest.raises(KeyboardInterrupt):
        shrink.compress_folder(src, out, ratio=0.5, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no half-written folder beside it


def test_an_existing_output_is_refused_without_overwrite(tmp_path):
    _, src = _saved(tmp_path, "gpt2_conv1d")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(shrink.ShrinkError, match="overwrite"):
        shrink.compress_folder(src, tmp_path / "out", ratio=0.5)


def test_a_missing_shard_is_one_clear_error(tmp_path):
    _, src = _saved(tmp_path, "llama")
    shard = sorted(src.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(shrink.ShrinkError, match=f"shard '{shard.name}' .* is missing"):
        shrink.compress_folder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_truncated_shard_is_one_clear_error(tmp_path):
    _, src = _saved(tmp_path, "llama")
    shard = sorted(src.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(shrink.ShrinkError, match="is truncated"):
        shrink.compress_folder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_layers_that_do_not_repeat_are_refused(tmp_path):
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                      sliding_window=8, max_window_layers=2,
                                      layer_types=["full_attention", "full_attention", "sliding_attention",
                                                   "sliding_attention"])
    transformers.Qwen2ForCausalLM(config).save_pretrained(tmp_path / "src")
    with pytest.raises(shrink.ShrinkError, match="differs between layers"):
        shrink.compress_folder(tmp_path / "src", tmp_path / "out")


@pytest.mark.parametrize("bad", [{"a": 0.5}, 1.0, -0.1])
def test_bad_ratios_are_refused(tmp_path, bad):
    _, src = _saved(tmp_path, "llama")
    with pytest.raises(shrink.ShrinkError, match="ratio"):
        shrink.compress_folder(src, tmp_path / "out", ratio=bad)


def test_the_cli_streams_a_folder_and_refuses_options_it_cannot_honour(tmp_path, capsys):
    from shrink.app.cli import main

    _, src = _saved(tmp_path, "qwen2_gqa")
    assert main(["compress", "--hf", str(src), "--stream", "--out", str(tmp_path / "out")]) == 0
    assert "num_key_value_heads: 2 -> 1" in capsys.readouterr().out
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert loaded.config.hidden_size == 32
    assert main(["compress", "--hf", str(src), "--stream", "--scope", "global", "--out", str(tmp_path / "b")]) == 2
    assert "drop --scope global" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
