"""analyze: the groups and their couplings, and the layers kept whole with reasons."""

from __future__ import annotations

import json

import torch

import shrink
from models import (Attention, Concat, Conv1x1Head, DepthwiseSeparable, GroupedConv, GroupedQueryAttention,
                    InputResidual, MHATransformer, Residual)


def _kinds(report):
    return {k for g in report.prunable for k in g.kinds}


def test_residual_groups_and_couplings():
    report = shrink.analyze(Residual(), torch.randn(1, 3, 16, 16))
    stem = next(g for g in report.groups if g.root == "stem.0")
    assert stem.prunable and "residual add" in stem.kinds and "norm" in stem.kinds
    assert "layer1.1.bn2 (out)" in stem.layers and "layer2.0.conv1 (in)" in stem.layers
    assert dict(report.kept_whole) == {"fc": "model output"}


def test_couplings_are_named():
    assert "concat" in _kinds(shrink.analyze(Concat(), torch.randn(1, 3, 8, 8)))
    assert "depthwise conv" in _kinds(shrink.analyze(DepthwiseSeparable(), torch.randn(1, 3, 8, 8)))
    assert "grouped conv" in _kinds(shrink.analyze(GroupedConv(), torch.randn(1, 3, 8, 8)))
    assert "attention heads" in _kinds(shrink.analyze(Attention(), torch.randn(1, 4, 12)))
    assert "grouped-query" in _kinds(shrink.analyze(GroupedQueryAttention(), torch.randn(1, 4, 12)))
    assert "attention (per-head dims)" in _kinds(shrink.analyze(MHATransformer(), torch.randn(1, 4, 12)))


def test_conv_classifier_is_kept_as_model_output():
    report = shrink.analyze(Conv1x1Head(), torch.randn(1, 3, 8, 8))
    assert dict(report.kept_whole)["classifier"] == "model output"


def test_input_coupled_width_is_kept_with_reason():
    report = shrink.analyze(InputResidual(), torch.randn(2, 16))
    assert "model input" in dict(report.kept_whole)["fc2"]


def test_ignored_layers_are_reported():
    report = shrink.analyze(Residual(), torch.randn(1, 3, 8, 8), ignore=["layer1.0.conv1"])
    assert dict(report.kept_whole)["layer1.0.conv1"] == "ignored"


def test_report_prints_and_serialises():
    report = shrink.analyze(Residual(), torch.randn(1, 3, 8, 8))
    text = str(report)
    assert "Prunable groups" in text and "stem.0" in text and "model output" in text
    assert json.loads(json.dumps(report.to_dict()))["kept_whole"][0]["layer"] == "fc"


def test_analyze_leaves_model_untouched():
    model = Residual()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shrink.analyze(model, torch.randn(1, 3, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training
