"""Self-healing and verified cuts: what breaks, or computes something else, is kept whole and reported."""

from __future__ import annotations


import pytest
import torch
from torch import nn

import shrink
from models import MisTraced, SlowTrace, randomize_bn
from oracle import assert_matches_oracle


def _model():
    torch.manual_seed(0)
    model = MisTraced().eval()
    randomize_bn(model)
    return model


def test_a_mis_traced_coupling_is_caught_and_kept_whole():
    model, x = _model(), torch.randn(2, 3, 8, 8)
    result = shrink.compress(model, x, ratio=0.5)
    assert "differs from the original with the cut units masked" in result.kept_whole["conv1"]
    assert result.model.conv1.out_channels == 8  # kept whole
    assert result.model.conv2.out_channels == 8 and result.model.conv3.out_channels == 8  # the rest is cut
    assert result.after.params < result.before.params
    assert_matches_oracle(model, result, x)
    assert set(result.plan.checks["exact"]) == {"conv2", "conv3"}
    assert result.plan.kept_whole["conv1"] == result.kept_whole["conv1"]


def test_when_the_trials_run_out_the_largest_passing_cut_is_kept(monkeypatch):
    """With the trials spent right after a passing one, compress used to return the uncut model
    (CoaT: 0% removed after 64 trials); it keeps the largest combination that passed its checks."""
    from shrink.cut import heal

    monkeypatch.setattr(heal, "MAX_TRIALS", 4)
    model, x = _model(), torch.randn(2, 3, 8, 8)
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.conv1.out_channels == 8  # the mis-traced group stays whole
    assert result.model.conv2.out_channels == 8 and result.model.conv3.out_channels == 8
    assert set(result.plan.checks["exact"]) == {"conv2", "conv3"} and "conv2" not in result.kept_whole
    assert_matches_oracle(model, result, x)


def test_strict_raises_naming_the_producing_layer():
    with pytest.raises(shrink.UnsupportedLayerError, match=r"ignore=\['conv1'\]") as info:
        shrink.compress(_model(), torch.randn(2, 3, 8, 8), ratio=0.5, strict=True)
    assert info.value.layers == ("conv1",)


def test_inplace_healing_leaves_the_callers_object_cut_and_working():
    model, x = _model(), torch.randn(2, 3, 8, 8)
    reference = _model()
    result = shrink.compress(model, x, ratio=0.5, inplace=True)
    assert result.model is model
    assert model.conv2.out_channels == 8 and model.conv1.out_channels == 8
    assert_matches_oracle(reference, result, x)


def test_analyze_lists_every_group_compress_would_keep_whole_in_one_run():
    report = shrink.analyze(_model(), torch.randn(2, 3, 8, 8))
    by_root = {g.root: g for g in report.groups}
    assert not by_root["conv1"].prunable and "differs" in by_root["conv1"].reason
    assert by_root["conv2"].prunable and by_root["conv2"].check == "exact"
    assert "Groups kept whole" in str(report)
    fast = shrink.analyze(_model(), torch.randn(2, 3, 8, 8), check=False)
    assert {g.root: g.prunable for g in fast.groups}["conv1"]  # tracing alone cannot see it


@pytest.mark.parametrize("name", ["TinyMLP", "ConvBN", "Residual", "Concat", "DepthwiseSeparable", "GroupedConv",
                                  "Attention", "GroupedQueryAttention", "MHATransformer"])
def test_clean_models_need_no_healing(name):
    from models import ORACLE_MODELS

    cls, shape = ORACLE_MODELS[name]
    model = cls().eval()
    x = torch.randn(*shape) if name not in ("Attention", "GroupedQueryAttention", "MHATransformer") else \
        torch.randn(*shape)
    result = shrink.compress(model, x, ratio=0.5)
    healed = {k: v for k, v in result.kept_whole.items() if any(w in v for w in ("fails", "differs", "ranked"))}
    assert not healed
    checks = result.plan.checks
    assert set(checks["exact"]) | set(checks["shape_only"]) == {s.layer for s in result.plan.steps}
    if name != "MHATransformer":  # per-head dims under attention scaling: checked for shape only
        assert checks["exact"] and not checks["shape_only"]


def test_tracing_has_a_time_budget_and_a_clear_answer():
    with pytest.raises(shrink.UnsupportedLayerError, match=r"did not finish within 0\.3\d* s.*trace_timeout="):
        shrink.compress(SlowTrace(), torch.randn(1, 4), trace_timeout=0.3)


def test_a_compress_that_removes_nothing_says_why():
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.warns(UserWarning, match=r"removed nothing: every group was kept whole: '0': model output"):
        shrink.compress(model, torch.randn(1, 4))
