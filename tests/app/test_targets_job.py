"""Targets through the CLI and the job: budgets in the report, exclusive options, slower models flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import shrink
from shrink.app import report
from shrink.app.cli import main
from shrink.deploy.bench import BenchReport, BenchRow

HERE = Path(__file__).parent.parent


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("SHRINK_CACHE_DIR", str(tmp_path / "cache"))
    from cli_models import mlp

    path = tmp_path / "ckpt.pt"
    torch.save(mlp().state_dict(), path)
    return path


def test_cli_macs_budget_is_met_and_reported(tmp_path, ckpt):
    out = tmp_path / "out"
    code = main(["compress", "--model", "cli_models:mlp", "--weights", str(ckpt), "--input", "2x4", "--macs", "0.5",
                 "--out", str(out), "--no-onnx"])
    assert code == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["settings"]["target"]["macs"] == 0.5
    assert doc["macs"]["after"] <= 0.5 * doc["macs"]["before"]
    assert "| macs <= 0.5 |" in (out / "report.md").read_text()
    from cli_models import mlp

    loaded = shrink.load(out, mlp())
    assert shrink.count(loaded, torch.randn(2, 4)).macs == doc["macs"]["after"]


def test_cli_refuses_a_ratio_with_a_target(tmp_path, ckpt, capsys):
    code = main(["compress", "--model", "cli_models:mlp", "--input", "2x4", "--ratio", "0.5", "--speedup", "2",
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "give one of ratio=, speedup=" in capsys.readouterr().err


def test_a_compressed_model_measured_slower_is_flagged():
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    result = shrink.compress(net, torch.randn(1, 8), ratio=0.5)
    rows = (BenchRow("before", "onnxruntime", "cpu", 1, 2, p50_ms=1.0), BenchRow("after", "onnxruntime", "cpu", 1, 2,
                                                                                   p50_ms=1.3))
    doc = report.summary(result, bench=BenchReport(rows))
    assert len(doc["warnings"]) == 1 and "SLOWER than the original on onnxruntime cpu batch 1 (x0.77)" in doc["warnings"][0]
    faster = (rows[0], BenchRow("after", "onnxruntime", "cpu", 1, 2, p50_ms=0.5))
    assert report.summary(result, bench=BenchReport(faster))["warnings"] == []
