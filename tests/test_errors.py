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


@pytest.mark.parametrize("where", ["model", "layer"])
def test_torchscript_is_refused_with_the_way_to_an_eager_model(where):
    """A scripted model (or layer) used to fail inside the tracer ("register_forward_pre_hook is not supported")."""
    mlp = TinyMLP().eval()
    model = torch.jit.script(mlp) if where == "model" else nn.Sequential(torch.jit.script(mlp), nn.ReLU())
    match = "the model is a TorchScript" if where == "model" else "layer '0' of the model is a TorchScript"
    for call in (lambda: shrink.compress(model, X), lambda: shrink.analyze(model, X)):
        with pytest.raises(shrink.ShrinkTypeError, match=f"{match}.*load_state_dict"):
            call()


def test_unknown_ignore_name_suggests_close_ones():
    with pytest.raises(shrink.ShrinkValueError, match="Did you mean 'layer1.0.conv1'"):
        shrink.compress(Residual(), torch.randn(1, 3, 8, 8), ignore=["layer1.0.conv"])


class _Gain(nn.Module):
    """Reshapes to a fixed [4, n // 4] grid: narrowing its input breaks it.

    (A fixed-size buffer multiplied in used to be the example; layers/constants.py now keeps
    such a width whole instead.)
    """

    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        return (x.view(x.shape[0], 4, self.n // 4) * 2).flatten(1)


class _WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 16)
        self.gain = _Gain(16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(torch.relu(self.gain(self.fc(x))))


def test_layer_that_breaks_is_kept_whole_or_named_with_fix_under_strict():
    model = _WithBuffer()
    # Self-healing by default: the width the buffer multiplies is kept whole, with the reason.
    with pytest.warns(UserWarning, match="removed nothing"):
        healed = shrink.compress(model, torch.randn(2, 4), ratio=0.5)
    assert healed.model.fc.out_features == 16
    assert "fails in layer 'gain'" in healed.kept_whole["fc"]
    assert healed.plan.kept_whole["fc"] == healed.kept_whole["fc"]
    # strict=True raises instead, naming the producing layer in the caller's syntax.
    with pytest.raises(shrink.UnsupportedLayerError, match=r"fails in layer 'gain'.*ignore=\['fc'\]") as info:
        shrink.compress(model, torch.randn(2, 4), ratio=0.5, strict=True)
    assert info.value.layers == ("fc",)
    result = shrink.compress(model, torch.randn(2, 4), ratio=0.5, ignore=["fc"])
    assert result.model.fc.out_features == 16


# --- hardening (issue 12): raw exceptions became one ShrinkError with the fix ---------------------------


def test_initial_state_of_numbers_is_refused_with_the_fix():
    state = {k: 1.0 for k in TinyMLP().state_dict()}
    with pytest.raises(shrink.ShrinkTypeError, match=r"initial_state must map names to tensors.*state_dict\(\)"):
        shrink.compress(TinyMLP(), X, reinit="initial", initial_state=state)


def test_initial_state_of_another_configuration_says_what_to_pass():
    state = TinyMLP((2, 21, 18, 16, 14, 2)).state_dict()
    with pytest.raises(shrink.ShrinkValueError, match="another configuration: pass the state_dict of this same"):
        shrink.compress(TinyMLP(), X, reinit="initial", initial_state=state)


@pytest.mark.parametrize("ignore, match", [
    (42, r"ignore= takes a list of modules or qualified names, e\.g\. ignore=\['fc'\].*got int 42"),
    ([42], r"found int 42"),
    ({"net.0": True}, "ignore= takes a list"),
])
def test_ignore_of_the_wrong_type(ignore, match):
    with pytest.raises(shrink.ShrinkTypeError, match=match):
        shrink.compress(TinyMLP(), X, ignore=ignore)
    with pytest.raises(shrink.ShrinkTypeError, match=match):
        shrink.analyze(TinyMLP(), X, ignore=ignore)
    with pytest.raises(shrink.ShrinkTypeError, match=match):
        shrink.compress_iteratively(TinyMLP(), X, ratio=0.5, steps=2, ignore=ignore)


def test_ignore_none_means_nothing_ignored():
    assert shrink.compress(TinyMLP(), X, ignore=None).plan.settings["ignore"] == []


def test_seed_of_the_wrong_type():
    with pytest.raises(shrink.ShrinkTypeError, match="seed must be an int"):
        shrink.compress(TinyMLP(), X, reinit="random", seed="a")


def test_inplace_refusal_leaves_the_model_as_it_was():
    model = TinyMLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(shrink.ShrinkTypeError):
        shrink.compress(model, X, inplace=True, ignore=42)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nan_weights_are_refused_before_ranking():
    model = TinyMLP()
    with torch.no_grad():
        model.net[2].weight[0, 0] = float("nan")
    with pytest.raises(shrink.ShrinkValueError, match=r"NaN or infinite values in \['net.2.weight'\].*did training diverge"):
        shrink.compress(model, X)
