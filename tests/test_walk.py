"""Every public function given what a careless caller passes: one ShrinkError that says what to pass."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import shrink
from models import ConvBN, TinyMLP

X = torch.randn(2, 2)
PAIRS = [(X, torch.tensor([0, 1]))]

# Each takes the wrong thing where the model goes; every one must refuse with ShrinkTypeError.
# (compress and analyze: tests/test_errors.py; benchmark takes paths too: tested below.)
CALLS = {
    "compress_iteratively": lambda m: shrink.compress_iteratively(m, X, ratio=0.5, steps=2),
    "sparsify": lambda m: shrink.sparsify(m, 0.5),
    "sparsity": lambda m: shrink.sparsity(m),
    "make_permanent": lambda m: shrink.make_permanent(m),
    "prune_iteratively": lambda m: shrink.prune_iteratively(m, 0.5, 2),
    "compact": lambda m: shrink.compact(m, X),
    "sweep": lambda m: shrink.sweep(m, lambda _: 1.0, [0.5], example_inputs=X),
    "fit": lambda m: shrink.fit(m, PAIRS, progress=False),
    "evaluate": lambda m: shrink.evaluate(m, PAIRS),
    "recalibrate_bn": lambda m: shrink.recalibrate_bn(m, PAIRS),
    "count": lambda m: shrink.count(m, X),
    "export_onnx": lambda m: shrink.export_onnx(m, X, "never-written.onnx"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("wrong", ["resnet18.pt", None, 3], ids=["path", "None", "int"])
def test_non_module_is_refused(name, wrong):
    with pytest.raises(shrink.ShrinkTypeError, match="must be a"):
        CALLS[name](wrong)


@pytest.mark.parametrize("name", ["sparsity", "count", "export_onnx", "compact"])
def test_a_result_where_a_model_goes_says_pass_result_model(name):
    result = shrink.compress(TinyMLP(), X)
    with pytest.raises(shrink.ShrinkTypeError, match=r"pass `model.model`"):
        CALLS[name](result)


def test_benchmark_of_one_module_asks_for_a_dict():
    with pytest.raises(shrink.ShrinkTypeError, match=r"dict of name -> model, e.g. \{'dense'"):
        shrink.benchmark(TinyMLP(), X, runtimes=("torch",), devices=("cpu",), batch_sizes=(1,))


def test_benchmark_of_a_result_says_pass_result_model():
    with pytest.raises(shrink.ShrinkTypeError, match=r"Pass `result.model`"):
        shrink.benchmark({"m": shrink.compress(TinyMLP(), X)}, X, runtimes=("torch",), devices=("cpu",))


def test_benchmark_refuses_a_missing_onnx_file_before_timing_anything(tmp_path):
    with pytest.raises(shrink.ShrinkValueError, match="is not an existing .onnx file"):
        shrink.benchmark({"dense": TinyMLP(), "gone": str(tmp_path / "gone.onnx")}, X, runtimes=("torch",),
                         devices=("cpu",), batch_sizes=(1,), iters=1, warmup=0, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": 0}, "threads must be an int >= 1"),
    ({"iters": 2.5}, "iters must be an int"),
    ({"batch_sizes": 1}, r"batch_sizes must be a non-empty tuple"),
    ({"runtimes": "torch"}, r"runtimes must be a non-empty tuple, e.g. runtimes=\('torch',\)"),
])
def test_benchmark_options(kwargs, match):
    options = dict(runtimes=("torch",), devices=("cpu",), batch_sizes=(1,), iters=1, warmup=0, progress=False)
    with pytest.raises(shrink.ShrinkError, match=match):
        shrink.benchmark({"m": TinyMLP()}, X, **{**options, **kwargs})


@pytest.mark.parametrize("kwargs", [{"lr": math.nan}, {"lr": math.inf}, {"epochs": 1.5}])
def test_fit_refuses_nan_and_non_integer_options(kwargs):
    model = TinyMLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(shrink.ShrinkValueError, match="fit needs"):
        shrink.fit(model, PAIRS, progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fit_on_an_empty_loader_is_refused_not_reported_as_loss_zero():
    with pytest.raises(shrink.ShrinkValueError, match="yielded no batches"):
        shrink.fit(TinyMLP(), [], epochs=1, progress=False)


@pytest.mark.parametrize("fn", [shrink.evaluate, shrink.fit])
def test_a_loader_of_bare_tensors_is_refused(fn):
    with pytest.raises(shrink.ShrinkValueError, match=r"\(inputs, labels\) pairs"):
        fn(TinyMLP(), [X])


def test_recalibrate_bn_on_bare_tensors_leaves_statistics_as_they_were():
    model = ConvBN()
    model.bn1.running_mean.fill_(0.5)
    model.bn1.momentum = 0.3
    with pytest.raises(shrink.ShrinkValueError, match=r"\(inputs, labels\) pairs"):
        shrink.recalibrate_bn(model, [torch.randn(2, 3, 16, 16)])
    assert torch.all(model.bn1.running_mean == 0.5) and model.bn1.momentum == 0.3


@pytest.mark.parametrize("atol", [math.nan, -1.0, "1e-6"])
def test_compact_atol(atol):
    with pytest.raises(shrink.ShrinkValueError, match="atol must be a number >= 0"):
        shrink.compact(TinyMLP(), X, atol=atol)


@pytest.mark.parametrize("target, steps", [("0.5", 2), (0.5, 2.0)])
def test_prune_iteratively_numbers(target, steps):
    model = TinyMLP()
    with pytest.raises(shrink.ShrinkValueError, match="0 <= target < 1"):
        shrink.prune_iteratively(model, target, steps)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


def test_sweep_ratio_of_one_is_refused_before_any_work():
    with pytest.raises(shrink.ShrinkValueError, match="every ratio must be a number within"):
        shrink.sweep(TinyMLP(), lambda _: 1.0, [0.5, 1.0], example_inputs=X)
