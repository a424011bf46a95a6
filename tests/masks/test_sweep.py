"""sweep: seed 003's table, the right shape and sensible values on a tiny model."""

from __future__ import annotations

import torch
from torch import nn

import shrink


def test_sweep_shape_and_values(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(16, 8)
    y = model(x).argmax(1)

    def evaluate(m):
        with torch.no_grad():
            return float((m(x).argmax(1) == y).float().mean())

    ratios = (0.0, 0.5, 0.9)
    report = shrink.sweep(model, evaluate, ratios, example_inputs=x, latency_iters=3)
    assert [(r.method, r.ratio) for r in report.rows] == [(m, r) for m in ("weight", "unit") for r in ratios]
    by = {(r.method, r.ratio): r for r in report.rows}
    assert by[("weight", 0.0)].accuracy == 1.0 and by[("unit", 0.0)].accuracy == 1.0
    assert by[("weight", 0.9)].params == by[("weight", 0.0)].params  # masks do not shrink the model
    assert by[("unit", 0.9)].params < by[("unit", 0.5)].params < by[("unit", 0.0)].params
    assert abs(by[("weight", 0.5)].sparsity - 0.5) < 0.01 and by[("unit", 0.5)].sparsity > 0.4
    assert all(r.p50_ms > 0 for r in report.rows)
    assert "| unit | 0.90 |" in report.to_markdown()
    assert report.plot(tmp_path / "s.png").stat().st_size > 1000
