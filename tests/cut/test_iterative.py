"""Structural iterative pruning: on schedule, same widths as one-shot, plan replays every round."""

from __future__ import annotations

import torch

import shrink
from models import Residual, TinyMLP, randomize_bn
from shrink.cut.iterative import compress_iteratively


def test_reaches_the_one_shot_widths_and_logs_each_round(tmp_path):
    model = randomize_bn(Residual())
    x = torch.randn(2, 3, 16, 16)
    seen = []
    result, log = compress_iteratively(model, x, ratio=0.5, steps=3, finetune=lambda m, k: seen.append(k),
                                       evaluate=lambda m: 0.5)
    one_shot = shrink.compress(model, x, ratio=0.5)
    assert seen == [1, 2, 3] and [e["step"] for e in log] == [1, 2, 3]
    assert log[0]["params"] > log[1]["params"] > log[2]["params"] == one_shot.after.params
    assert result.after == one_shot.after
    assert {s.round for s in result.plan.steps} == {1, 2, 3}
    assert result.plan.widths["stem.0"]["out"] == [8, 4]
    assert all(0 <= i < 8 for i in result.plan.kept["stem.0"]["out"])
    loaded = shrink.load(shrink.save(result, tmp_path / "o"), Residual()).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))


def test_kept_indices_compose_to_original_coordinates():
    model = TinyMLP((4, 16, 3))
    with torch.no_grad():
        model.net[0].weight.copy_(torch.arange(16.0).repeat_interleave(4).view(16, 4))  # row i has L1 4i
    result, _ = compress_iteratively(model, torch.randn(1, 4), ratio=0.75, steps=2)
    assert result.plan.kept["net.0"]["out"] == [12, 13, 14, 15]
    assert torch.equal(result.model.net[0].weight, model.net[0].weight[12:])
