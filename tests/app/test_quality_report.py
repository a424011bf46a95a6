"""The main job's quality rows: the metric dense, after the cut and after recovery, or why there are none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import shrink
from shrink.app import report
from shrink.app.cli import main
from shrink.deploy.bench import BenchReport, BenchRow

HERE = Path(__file__).parent.parent  # tests/, where cli_models.py lives


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    from cli_models import mlp

    path = tmp_path / "ckpt.pt"
    torch.save(mlp().state_dict(), path)
    return path


def _compress(tmp_path, *flags) -> tuple[int, dict, str]:
    out = tmp_path / "out"
    if "--input" not in flags:
        flags = (*flags, "--input", "2x4")
    code = main(["compress", "--out", str(out), "--no-onnx", "--force", *flags])
    if code:
        return code, {}, ""
    return code, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_with_data_the_report_shows_the_metric_dense_after_the_cut_and_after_recovery(tmp_path, ckpt):
    code, doc, md = _compress(tmp_path, "--model", "cli_models:mlp", "--weights", str(ckpt),
                              "--data", "cli_models:loaders", "--epochs", "1", "--importance", "activation")
    assert code == 0
    q = doc["quality"]
    assert q["metric"] == "accuracy" and q["data"] == "cli_models:loaders" and q["importance"] == "activation"
    assert [row["stage"] for row in q["stages"]] == ["dense", "after cut", "after fine-tuning (distilled)"]
    from cli_models import loaders, mlp

    dense = mlp()
    dense.load_state_dict(torch.load(ckpt, weights_only=True))
    assert q["stages"][0]["value"] == shrink.evaluate(dense, loaders()[1])
    loaded = shrink.load(tmp_path / "out", mlp())  # the recovered model the folder holds
    assert q["stages"][-1]["value"] == shrink.evaluate(loaded, loaders()[1])
    assert q["stages"][0]["params"] == doc["params"]["before"] and q["stages"][1]["params"] == doc["params"]["after"]
    assert doc["importance"]["method"] == "activation" and doc["importance"]["batches"] == 4  # 64 samples / 16
    assert "## Quality" in md and "units ranked by activation, calibration 4 batches" in md
    assert f"| dense | {q['stages'][0]['value']:.2%} |" in md
    assert "| after cut |" in md and "| after fine-tuning (distilled) |" in md


def test_without_data_the_report_says_why_there_are_no_metric_rows(tmp_path, ckpt):
    code, doc, md = _compress(tmp_path, "--model", "cli_models:mlp", "--weights", str(ckpt))
    assert code == 0
    assert doc["quality"]["stages"] == [] and doc["quality"]["note"] == "no --data given"
    assert "No accuracy rows: no --data given." in md
    assert "| dense |" not in md


def test_a_text_file_is_measured_as_perplexity(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)  # 1800 bytes: 112 windows of 16
    code, doc, md = _compress(tmp_path, "--model", "cli_models:byte_lm", "--input", "int64:1x16", "--data", str(text),
                              "--importance", "taylor")
    assert code == 0
    q = doc["quality"]
    assert q["metric"] == "perplexity" and [row["stage"] for row in q["stages"]] == ["dense", "after cut"]
    torch.manual_seed(0)  # the factory's weights, as the CLI built them (no --weights)
    from shrink.app.data import text_loaders

    _, val = text_loaders(text, seq_len=16)
    assert len(val.dataset) == 11  # the last tenth of the windows
    dense = shrink.evaluate(_built("byte_lm"), val, metric="perplexity")
    assert q["stages"][0]["value"] == pytest.approx(dense)
    assert doc["importance"]["loss"] == "next-token cross-entropy against the labels"
    assert "| stage | perplexity |" in md and f"| dense | {dense:.3f} |" in md


def _built(factory: str):
    torch.manual_seed(0)
    import cli_models

    return getattr(cli_models, factory)()


@pytest.mark.parametrize("flags, message", [
    (["--model", "cli_models:mlp", "--importance", "taylor"], "--importance taylor ranks units on data: pass --data"),
    (["--model", "cli_models:mlp", "--importance", "l2", "--norm", "2"], "give --importance or --norm, not both"),
    (["--model", "cli_models:byte_lm", "--data", "corpus.txt", "--epochs", "1"], "fine-tuning on a text file"),
    (["--model", "cli_models:byte_lm", "--data", "missing.txt"], "no such text file"),
    (["--model", "cli_models:small_vocab_lm", "--data", "corpus.txt", "--input", "int64:1x8"],
     "the model's vocabulary has 50 ids"),
    (["--model", "cli_models:mlp", "--data", "corpus.txt"], "its example input must be token ids"),
])
def test_bad_quality_flags_exit_2_with_one_line(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("some text to read " * 20)
    code, _, _ = _compress(tmp_path, *flags)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_each_row_carries_the_size_and_latency_of_the_model_it_measured():
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    result = shrink.compress(net, torch.randn(1, 8), ratio=0.5)
    bench = BenchReport((BenchRow("before", "onnxruntime", "cpu", 1, 2, p50_ms=1.0),
                         BenchRow("after", "onnxruntime", "cpu", 1, 2, p50_ms=0.4),
                         BenchRow("before", "torch", "cpu", 32, 2, p50_ms=9.0),
                         BenchRow("after", "torch", "cpu", 32, 2, p50_ms=5.0)))
    stages = {"dense": 0.9, "after cut": 0.5, "after cut + BatchNorm recalibration": 0.7, "after fine-tuning": 0.88}
    q = report.summary(result, quality={"metric": "accuracy", "stages": stages}, bench=bench)["quality"]
    assert [(r["stage"], r["params"], r["p50_ms"]) for r in q["stages"]] == [
        ("dense", result.before.params, 1.0), ("after cut", result.after.params, 0.4),
        ("after cut + BatchNorm recalibration", result.after.params, 0.4), ("after fine-tuning", result.after.params, 0.4)]
    assert q["latency_at"] == {"runtime": "onnxruntime", "device": "cpu", "batch": 1}
