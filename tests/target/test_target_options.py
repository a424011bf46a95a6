"""Every compress option reaches the target path: strict=, trace_timeout=, uniform= (and ignore=).

Each test fails on a target path that drops the option: it would keep a broken group whole instead of
raising (strict), trace for minutes (trace_timeout), or cut each layer its own width (uniform).
Budgets (macs=) are used: they are counted, never timed.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn

import shrink
from models import MisTraced, SlowTrace, randomize_bn
from shrink.cut import graph
from shrink.target import space as _space
from shrink.target import tie as _tie


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE_DIR", str(tmp_path / "cache"))


def test_strict_reaches_the_target_path():
    torch.manual_seed(0)
    model, x = randomize_bn(MisTraced().eval()), torch.randn(2, 3, 8, 8)
    healed = shrink.compress(model, x, macs=0.1)
    assert "conv1" in healed.kept_whole  # by default the broken group is kept whole and reported
    with pytest.raises(shrink.UnsupportedLayerError, match=r"strict=True.*'conv1'"):
        shrink.compress(model, x, macs=0.1, strict=True)


def test_trace_timeout_reaches_the_target_path():
    with pytest.raises(shrink.UnsupportedLayerError, match=r"did not finish within 0.3 s.*trace_timeout="):
        shrink.compress(SlowTrace(), torch.randn(1, 4), macs=0.5, trace_timeout=0.3)


class _Blocks(nn.Module):
    """Two residual MLP blocks of the same shape: one kind ("blocks.#.fc1:32") for uniform widths."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"fc1": nn.Linear(16, 32), "fc2": nn.Linear(32, 16)})
                                    for _ in range(2))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        for b in self.blocks:
            x = x + b["fc2"](torch.relu(b["fc1"](x)))
        return self.head(x)


def _peaked() -> nn.Module:
    """Block 0's hidden units: 4 strong, 28 near zero; block 1's all alike. A free allocation
    cuts block 0 far more than block 1; a uniform one must cut both the same."""
    torch.manual_seed(0)
    model = _Blocks().eval()
    with torch.no_grad():
        fc1, fc2 = model.blocks[0]["fc1"], model.blocks[0]["fc2"]
        fc1.weight[4:] *= 1e-3
        fc2.weight[:, 4:] *= 1e-3
    return model


def _hidden(result):
    return [result.model.blocks[i]["fc1"].out_features for i in range(2)]


def test_uniform_reaches_the_target_path():
    model, x = _peaked(), torch.randn(2, 16)
    free = shrink.compress(model, x, macs=0.5)
    same = shrink.compress(model, x, macs=0.5, uniform=True)
    a, b = _hidden(free)
    assert a < b  # the free allocation spends the budget on block 1
    assert _hidden(same)[0] == _hidden(same)[1] < 32
    assert same.after.macs <= 0.5 * same.before.macs and same.plan.settings["uniform"] is True


def test_tied_knobs_are_allocated_as_one_and_expand_to_every_layer():
    model, x = _peaked(), torch.randn(2, 16)
    traced = graph.trace(model, x)
    space = _space.build(traced, x)
    tied = _tie.tie(space, traced)
    names = {k.name for k in space.knobs}
    assert {"blocks.0.fc1", "blocks.1.fc1"} <= names
    ffn = [k for k in tied.knobs if isinstance(k, _tie.TiedKnob)]
    assert len(ffn) == 1 and {p.name for p in ffn[0].parts} == {"blocks.0.fc1", "blocks.1.fc1"}
    j = tied.knobs.index(ffn[0])
    keep = [k.units for k in tied.knobs]
    keep[j] = 8
    assert {n: r for n, r in _space.ratios(tied, keep).items()} == {"blocks.0.fc1": 0.75, "blocks.1.fc1": 0.75}
    assert ffn[0].value(8) == pytest.approx(sum(p.value(8) for p in ffn[0].parts))
    assert all(layer.knob_out == j for layer in tied.layers if layer.name.endswith("fc1"))


def test_a_hugging_face_model_is_allocated_uniform_by_default_and_free_with_uniform_false():
    hf = pytest.importorskip("hf_models")
    model, x = hf.bert(), hf.token_inputs()
    with torch.no_grad():  # layer 0's FFN: 8 strong units, the rest near zero
        model.encoder.layer[0].intermediate.dense.weight[8:] *= 1e-3
        model.encoder.layer[0].output.dense.weight[:, 8:] *= 1e-3
    ffn = lambda r: [layer.intermediate.dense.out_features for layer in r.model.encoder.layer]  # noqa: E731
    uniform = shrink.compress(model, x, macs=0.6)
    free = shrink.compress(model, x, macs=0.6, uniform=False)
    assert uniform.plan.settings["uniform"] is True and free.plan.settings["uniform"] is False
    assert len(set(ffn(uniform))) == 1
    assert ffn(free)[0] < ffn(free)[1]
    # the allocation itself (not only the cut) is uniform: what was priced is what was cut
    kept = uniform.plan.settings["widths_kept"]
    assert kept.get("encoder.layer.0.intermediate.dense") == kept.get("encoder.layer.1.intermediate.dense")
    for r in (uniform, free):
        assert r.after.macs <= 0.6 * r.before.macs


def test_bad_options_are_caught_before_the_target_path():
    x = torch.randn(1, 3)
    with pytest.raises(shrink.ShrinkTypeError, match="model must be a torch.nn.Module"):
        shrink.compress("not a model", x, macs=0.5)
    with pytest.raises(shrink.ShrinkValueError, match="reinit='initial' needs initial_state="):
        shrink.compress(nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 2)), x, macs=0.5, reinit="initial")
    with pytest.raises(shrink.ShrinkTypeError, match="seed must be an int"):
        shrink.compress(nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 2)), x, macs=0.5, seed="1")


def test_heads_whose_size_follows_a_hidden_width_kept_whole_are_not_offered():
    # BertModel returns the hidden states: the hidden width is an output, so (head size = hidden /
    # heads) equalise keeps the heads whole too; the tied space must not price cutting them.
    hf = pytest.importorskip("hf_models")
    model, x = hf.bert(), hf.token_inputs()
    traced = graph.trace(model, x)
    tied = _tie.tie(_space.build(traced, x), traced)
    assert [k.kind for k in tied.knobs] == ["channels"]
    assert {p.name for p in tied.knobs[0].parts} == {f"encoder.layer.{i}.intermediate.dense" for i in range(2)}
