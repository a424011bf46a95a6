"""Hand-written norms that store their width (layers/norm_shape.py).

The pattern (ConvNeXt's reference code, facebookresearch/ConvNeXt models/convnext.py, and its
copies in ConvNeXt-V2, InternImage and many detection repositories), written out here: a
``LayerNorm`` module that keeps ``normalized_shape = (C,)`` as a plain tuple for ``F.layer_norm``
(channels last, inside every block) and normalises by hand along dim 1 (channels first, in the stem
and the downsampling layers). Before, the cut weight and the stored tuple disagreed ("Expected
weight to be of same shape as normalized_shape") and every residual stream was kept whole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import shrink


class LayerNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6, channels_first: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.eps, self.channels_first = eps, channels_first
        self.normalized_shape = (width,)

    def forward(self, x):
        if not self.channels_first:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Block(nn.Module):
    """Depthwise 7x7, channels-last norm and MLP, per-channel layer scale, residual add."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm(dim)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(0.5 * torch.ones(dim))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    def __init__(self, dims=(16, 32)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm(dims[0], channels_first=True))
        self.stage1 = Block(dims[0])
        self.down = nn.Sequential(LayerNorm(dims[0], channels_first=True), nn.Conv2d(dims[0], dims[1], 2, 2))
        self.stage2 = Block(dims[1])
        self.norm = nn.LayerNorm(dims[1])
        self.head = nn.Linear(dims[1], 10)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean((2, 3))))


def test_layernorm_storing_its_width_is_cut_with_it():
    torch.manual_seed(0)
    model = TinyConvNeXt().eval()
    x = torch.randn(1, 3, 32, 32)
    result = shrink.compress(model, x, ratio=0.5)

    assert result.kept_whole == {"head": "model output"}
    norms = [m for m in result.model.modules() if isinstance(m, LayerNorm)]
    assert {m.normalized_shape for m in norms} == {(8,), (16,)}
    assert all(m.normalized_shape == (m.weight.shape[0],) for m in norms)
    assert result.after.params < 0.4 * result.before.params
    with torch.no_grad():
        assert result.model(x).shape == (1, 10)
