"""Hand-written norms that store their width (layers/norm_shape.py), on ConvNeXt's own code
(tests/public/convnext.py, copied from facebookresearch/ConvNeXt): its ``LayerNorm`` keeps
``normalized_shape = (C,)`` for ``F.layer_norm`` (channels_last, in every block) and normalises by
hand along dim 1 (channels_first, in the stem and the downsampling layers)."""

from __future__ import annotations

import torch

import shrink
from public.convnext import ConvNeXt, LayerNorm


def test_convnext_layernorm_is_cut_with_its_stored_width():
    torch.manual_seed(0)
    model = ConvNeXt(depths=[1, 1, 1, 1], dims=[16, 16, 32, 32], num_classes=10, layer_scale_init_value=0.5).eval()
    x = torch.randn(1, 3, 32, 32)
    result = shrink.compress(model, x, ratio=0.5)

    # Before: every residual stream through a LayerNorm was kept whole ("Expected weight to be of
    # same shape as normalized_shape"), and a third of the parameters went.
    assert result.kept_whole == {"head": "model output"}
    norms = [m for m in result.model.modules() if isinstance(m, LayerNorm)]
    assert {m.normalized_shape for m in norms} == {(8,), (16,)}
    assert all(m.normalized_shape == (m.weight.shape[0],) for m in norms)
    assert 1 - result.after.params / result.before.params > 0.65
    with torch.no_grad():
        assert result.model(x).shape == (1, 10)
