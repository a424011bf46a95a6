"""benchmark: rows finite, positive, ordered; CUDA rows skipped with a reason where absent."""

from __future__ import annotations

import json
import math

import pytest
import torch

import shrink
from models import ConvBN, TinyMLP

FAST = dict(warmup=1, iters=5, progress=False)


def test_rows_are_finite_positive_and_ordered(tmp_path):
    model = ConvBN()
    x = torch.randn(1, 3, 16, 16)
    result = shrink.compress(model, x, ratio=0.5)
    rep = shrink.benchmark({"dense": model, "shrunk": result.model}, x, batch_sizes=(1, 4), threads=1, **FAST)
    ran = [r for r in rep.rows if not r.skipped]
    assert {(r.runtime, r.batch) for r in ran} == {("torch", 1), ("torch", 4), ("onnxruntime", 1), ("onnxruntime", 4)}
    for r in ran:
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms and math.isfinite(r.mean_ms)
        assert r.items_per_s == pytest.approx(r.batch / (r.mean_ms / 1e3)) and r.threads == 1 and r.iters == 5
    speed = rep.speedup("dense", "shrunk")
    assert set(speed) == {(r.runtime, r.device, r.batch) for r in ran if r.model == "dense"}
    assert all(v > 0 for v in speed.values())
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["torch"] == torch.__version__
    assert "| dense | torch | cpu | 1 | 1 |" in rep.to_markdown()
    assert rep.plot(tmp_path / "lat.png").stat().st_size > 1000


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip path of a machine without CUDA")
def test_cuda_rows_are_skipped_with_reason():
    rep = shrink.benchmark({"m": TinyMLP()}, torch.randn(1, 2), devices=("cuda",), batch_sizes=(1,), **FAST)
    assert rep.rows and all(r.skipped == "CUDA is not available" for r in rep.rows)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rows_run():
    rep = shrink.benchmark({"m": ConvBN()}, torch.randn(1, 3, 16, 16), runtimes=("torch", "torch-fp16"),
                           devices=("cuda",), batch_sizes=(1, 8), **FAST)
    assert all(not r.skipped and r.p50_ms > 0 for r in rep.rows)


def test_onnx_path_models(tmp_path):
    x = torch.randn(1, 2)
    path = shrink.export_onnx(TinyMLP(), x, tmp_path / "m.onnx").path
    rep = shrink.benchmark({"file": path}, x, devices=("cpu",), batch_sizes=(2,), **FAST)
    by_rt = {r.runtime: r for r in rep.rows}
    assert by_rt["torch"].skipped == "an ONNX file has no PyTorch runtime"
    assert by_rt["onnxruntime"].p50_ms > 0


def test_fp16_on_cpu_is_skipped():
    rep = shrink.benchmark({"m": TinyMLP()}, torch.randn(1, 2), runtimes=("torch-fp16",), devices=("cpu",),
                           batch_sizes=(1,), **FAST)
    assert rep.rows[0].skipped == "fp16 is timed on CUDA only"


def test_bad_arguments():
    with pytest.raises(shrink.ShrinkValueError, match="unknown runtime"):
        shrink.benchmark({"m": TinyMLP()}, torch.randn(1, 2), runtimes=("tensorrt",))
    with pytest.raises(shrink.ShrinkTypeError, match="nn.Module or an .onnx path"):
        shrink.benchmark({"m": 3}, torch.randn(1, 2))


def test_ratio_interval_and_ranking_known_answers():
    from shrink.deploy.bench import rankable, ratio_interval

    steady = ratio_interval([2.0] * 30, [1.0] * 30)
    assert steady == (2.0, 2.0, 2.0) and rankable(steady[0], steady[2])
    mixed = ratio_interval([1.0, 3.0] * 15, [2.0, 1.0] * 15)  # ratios 0.5 and 3.0 alternate: no order
    assert mixed[0] == 0.5 and mixed[2] == 3.0 and not rankable(mixed[0], mixed[2])
    assert rankable(0.99, 1.01)  # equal within 2%: a valid conclusion, not noise


def test_rows_carry_spread_and_pairs_an_interval():
    x = torch.randn(1, 2)
    rep = shrink.benchmark({"a": TinyMLP(), "b": TinyMLP()}, x, runtimes=("torch",), devices=("cpu",),
                           batch_sizes=(1,), **FAST)
    assert all(r.spread == pytest.approx(r.p90_ms / r.p50_ms) for r in rep.rows)
    (key, (low, mid, high)), = rep.intervals.items()
    assert key == ("b", "a", "torch", "cpu", 1) and low <= mid <= high
    assert rep.to_dict()["intervals"][0]["ratio_p50"] == mid


def test_progress_is_plain_lines_without_a_terminal(capsys):
    shrink.benchmark({"m": TinyMLP()}, torch.randn(1, 2), runtimes=("torch",), devices=("cpu",), batch_sizes=(1, 2),
                     warmup=1, iters=2, progress=True)
    err = capsys.readouterr().err
    assert "benchmark: 1/2 torch cpu b1" in err and "benchmark: 2/2 torch cpu b2" in err
