"""Bad input: one clear ShrinkError that says how to fix it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from models import Residual, TinyMLP

X = torch.randn(2, 2)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "half", True])
def test_ratio_out_of_range(ratio):
    with pytest.raises(shrink.ShrinkValueError, match="0 <= ratio < 1"):
        shrink.compress(TinyMLP(), X, ratio=ratio)


def test_errors_are_value_errors_too():
    with pytest.raises(ValueError):
        shrink.compress(TinyMLP(), X, ratio=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"scope": "everywhere"}, "scope must be one of"),
    ({"norm": 3}, "norm must be 1"),
    ({"reinit": "zeros"}, "reinit must be one of"),
    ({"round_to": 0}, "round_to must be None, .auto. or a positive int"),
    ({"ratio": {"net.0": 0.5}, "scope": "global"}, "scope='local'"),
    ({"ratio": {"nope": 0.5}}, r"ratio names layers the model does not have: \['nope'\]"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(shrink.ShrinkValueError, match=match):
        shrink.compress(TinyMLP(), X, **kwargs)


def test_reinit_initial_needs_state():
    with pytest.raises(shrink.ShrinkValueError, match="initial_state="):
        shrink.compress(TinyMLP(), X, reinit="initial")


def test_reinit_initial_names_missing_and_extra_keys_sorted():
    state = TinyMLP().state_dict()
    state.pop("net.2.weight")
    state.pop("net.0.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(shrink.ShrinkValueError, match=r"missing keys \['net.0.bias', 'net.2.weight'\], unexpected keys \['extra.weight'\]"):
        shrink.compress(TinyMLP(), X, reinit="initial", initial_state=state)


def test_reinit_initial_names_shape_mismatch():
    state = TinyMLP((2, 21, 18, 16, 14, 2)).state_dict()
    with pytest.raises(shrink.ShrinkValueError, match="'net.0.bias' is \\(21,\\)"):
        shrink.compress(TinyMLP(), X, reinit="initial", initial_state=state)


def test_inputs_the_model_cannot_run():
    with pytest.raises(shrink.ShrinkValueError, match="cannot run on the example inputs \\(float32\\[2x5\\]\\)"):
        shrink.compress(TinyMLP(), torch.randn(2, 5))


def test_inputs_of_wrong_type():
    with pytest.raises(shrink.ShrinkTypeError, match="example_inputs must be a tensor"):
        shrink.compress(TinyMLP(), 3.0)


def test_model_of_wrong_type():
    with pytest.raises(shrink.ShrinkTypeError, match="must be a torch.nn.Module"):
        shrink.compress("resnet", X)


def test_unknown_ignore_name_suggests_close_ones():
    with pytest.raises(shrink.ShrinkValueError, match="Did you mean 'layer1.0.conv1'"):
        shrink.compress(Residual(), torch.randn(1, 3, 8, 8), ignore=["layer1.0.conv"])


class _Gain(nn.Module):
    """Multiplies by a fixed-size buffer: narrowing its input breaks it (buffers are not cut)."""

    def __init__(self, n):
        super().__init__()
        self.register_buffer("g", torch.linspace(0.5, 1.5, n))

    def forward(self, x):
        return x * self.g


class _WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 16)
        self.gain = _Gain(16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(torch.relu(self.gain(self.fc(x))))


def test_layer_that_breaks_is_named_with_fix():
    model = _WithBuffer()
    with pytest.raises(shrink.ShrinkValueError, match=r"fails in layer 'gain'.*ignore="):
        shrink.compress(model, torch.randn(2, 4), ratio=0.5)
    result = shrink.compress(model, torch.randn(2, 4), ratio=0.5, ignore=["fc"])
    assert result.model.fc.out_features == 16
