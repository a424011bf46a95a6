"""Relative position bias tables with one column per head (T5, Swin): cut with the heads, exactly."""

from __future__ import annotations

import copy
import json

import torch

import shrink
from hf_models import FAMILIES, transformers


def _build(name):
    factory, inputs = FAMILIES[name]
    torch.manual_seed(0)
    return factory().eval(), inputs()


def _heads_masked(model, plan, out_name, head_dim):
    """Oracle: the original with each removed head's columns of the output projection zeroed."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for step in plan.steps:
            if step.op == "heads":
                out = getattr(ref.get_submodule(step.layer), out_name)
                for h in step.removed:
                    out.weight[:, h * head_dim:(h + 1) * head_dim] = 0
    return ref


def test_t5_heads_cut_alike_in_each_stack_with_the_bias_table_and_round_trip(tmp_path):
    model, x = _build("t5")
    result = shrink.compress(model, x, ratio=0.5)
    heads = {s.layer: s.removed for s in result.plan.steps if s.op == "heads"}
    assert len(heads) == 6  # 2 encoder self, 2 decoder self, 2 cross attention
    # The stack adds its first layer's bias in every layer: the same heads go everywhere in it.
    for stack in ("encoder", "decoder"):
        assert heads[f"{stack}.block.0.layer.0.SelfAttention"] == heads[f"{stack}.block.1.layer.0.SelfAttention"]
        kept = [h for h in range(4) if h not in heads[f"{stack}.block.0.layer.0.SelfAttention"]]
        table = result.model.get_submodule(f"{stack}.block.0.layer.0.SelfAttention").relative_attention_bias
        assert table.weight.shape == (32, 2) and table.embedding_dim == 2
        original = model.get_submodule(f"{stack}.block.0.layer.0.SelfAttention").relative_attention_bias.weight
        assert torch.equal(table.weight, original[:, kept])
    assert result.model.config.num_heads == 2 and result.model.config.d_kv == 8
    assert all(name in result.plan.checks["exact"] for name in heads)  # compress's own masking check
    folder = shrink.save_pretrained(result, tmp_path / "o")
    assert json.loads((folder / "config.json").read_text())["num_heads"] == 2
    loaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, result.model(**x).logits)
    runs = {(label, cache): m.generate(x["input_ids"], max_new_tokens=5, do_sample=False, use_cache=cache).tolist()
            for label, m in (("memory", result.model), ("loaded", loaded)) for cache in (True, False)}
    assert len({json.dumps(v) for v in runs.values()}) == 1, runs


def test_t5_head_cut_equals_the_heads_masked():
    model, x = _build("t5")
    blocks = [n for n, m in model.named_modules() if n.endswith(("SelfAttention", "EncDecAttention"))]
    result = shrink.compress(model, x, ratio={n: 0.5 for n in blocks}, uniform=False)
    assert {s.op for s in result.plan.steps} == {"heads"} and len(result.plan.steps) == 6
    ref = _heads_masked(model, result.plan, "o", 8)
    with torch.no_grad():
        got, expected = result.model(**x).logits, ref(**x).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, model(**x).logits, atol=1e-4)  # heads were removed: the oracle can fail


def test_swin_heads_cut_with_their_bias_columns_when_widths_may_differ(tmp_path):
    model, x = _build("swin")
    result = shrink.compress(model, x, ratio=0.5, uniform=False)
    heads = {s.layer: s.removed for s in result.plan.steps if s.op == "heads"}
    assert sorted(heads) == ["swin.encoder.layers.0.blocks.0.attention", "swin.encoder.layers.1.blocks.0.attention"]
    for name, removed in heads.items():
        attention = result.model.get_submodule(name)
        original = model.get_submodule(name).relative_position_bias.relative_position_bias_table
        kept = [h for h in range(original.shape[1]) if h not in removed]
        assert torch.equal(attention.relative_position_bias.relative_position_bias_table, original[:, kept])
        assert name in result.plan.checks["exact"]
    assert result.after.params < result.before.params
    loaded = shrink.load(shrink.save(result, tmp_path / "p"), FAMILIES["swin"][0]().eval())
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, result.model(**x).logits)


def test_swin_with_uniform_widths_says_why_its_config_cannot_follow():
    model, x = _build("swin")
    result = shrink.compress(model, x, ratio=0.5)
    attention = "swin.encoder.layers.0.blocks.0.attention"
    assert "several sizes" in result.kept_whole[attention] and "uniform=False" in result.kept_whole[attention]
    # Its FFN is cut all the same: one mlp_ratio states every stage's width (int(mlp_ratio * dim) units).
    fc1 = [result.model.get_submodule(f"swin.encoder.layers.{i}.blocks.0.mlp.fc1").out_features for i in range(2)]
    assert fc1 == [32, 64] and result.model.config.mlp_ratio == 2.0
