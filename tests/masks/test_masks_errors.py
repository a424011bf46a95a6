"""sparsify checks every layer before it masks the first: a refusal leaves the model as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from models import ConvBN, TinyMLP


def _no_masks(model: nn.Module) -> bool:
    return not any(hasattr(m, "weight_mask") for m in model.modules())


def test_count_larger_than_a_layer_masks_nothing():
    model = TinyMLP()  # the first layer has 40 weights, the others more
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(shrink.ShrinkValueError, match=r"amount=300 weights is more than layer\(s\) \['net.0'.*no layer was masked"):
        shrink.sparsify(model, 300)
    assert _no_masks(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_count_larger_than_a_later_layer_leaves_earlier_layers_unmasked():
    model = TinyMLP((2, 30, 30, 2))  # net.0: 60 weights, net.2: 900; 100 fits the first only
    with pytest.raises(shrink.ShrinkValueError, match=r"\['net.0'\]"):
        shrink.sparsify(model, 100, include_last=True, filter_fn=lambda n, m: n in ("net.2", "net.0"))
    assert _no_masks(model)


def test_structured_count_larger_than_a_layer_and_bad_dim():
    with pytest.raises(shrink.ShrinkValueError, match="slices along dim 0"):
        shrink.sparsify(ConvBN(), 17, structured=True)
    model = ConvBN()
    with pytest.raises(shrink.ShrinkValueError, match="dim=5 does not exist"):
        shrink.sparsify(model, 0.5, structured=True, dim=5)
    assert _no_masks(model)


def test_global_count_larger_than_all_weights():
    model = TinyMLP()
    with pytest.raises(shrink.ShrinkValueError, match="masked together"):
        shrink.sparsify(model, 10**6, scope="global")
    assert _no_masks(model)


def test_seed_and_dim_types():
    with pytest.raises(shrink.ShrinkTypeError, match="seed must be None or an int"):
        shrink.sparsify(TinyMLP(), 0.5, method="random", seed="7")
    with pytest.raises(shrink.ShrinkTypeError, match="dim must be an int"):
        shrink.sparsify(TinyMLP(), 0.5, structured=True, dim=None)


def test_compact_inplace_with_inputs_that_do_not_fit_leaves_masks_as_they_were():
    model = TinyMLP()
    shrink.sparsify(model, 0.5)
    with pytest.raises(shrink.ShrinkValueError, match="cannot run on the example inputs"):
        shrink.compact(model, torch.randn(2, 7), inplace=True)
    assert hasattr(model.net[0], "weight_mask")  # not baked
