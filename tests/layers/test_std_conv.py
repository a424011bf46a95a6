"""Weight-standardised convolutions (layers/std_conv.py) on a fixture written as timm writes them:
``StdConv2d`` (BiT) and ``ScaledStdConv2d`` with its per-filter ``gain`` (NFNet), in a
normalisation-free residual block (timm's ``NormFreeBlock``: ``out = act(x) * beta``, downsample
shortcut, ``out * alpha + shortcut``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import shrink
from shrink.layers import std_conv


class StdConv2d(nn.Conv2d):  # timm/layers/std_conv.py
    def __init__(self, in_channel, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1,
                 bias=False, eps=1e-6):
        padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2 if padding is None else padding
        super().__init__(in_channel, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                              momentum=0., eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledStdConv2d(nn.Conv2d):  # timm/layers/std_conv.py
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1,
                 bias=True, gamma=1.0, eps=1e-6, gain_init=1.0):
        padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2 if padding is None else padding
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
        self.gain = nn.Parameter(torch.full((self.out_channels, 1, 1, 1), gain_init))
        self.scale = gamma * self.weight[0].numel() ** -0.5  # gamma * 1 / sqrt(fan-in)
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=(self.gain * self.scale).view(-1), training=True, momentum=0.,
                              eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SameConv2d(nn.Conv2d):  # a subclass that pads in forward (timm's Conv2dSame): still plain in its weight
    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class NormFreeBlock(nn.Module):  # timm/models/nfnet.py, reduced
    def __init__(self, in_chs, out_chs, stride=1, alpha=0.2, beta=1.0):
        super().__init__()
        mid = out_chs // 2
        self.alpha, self.beta = alpha, beta
        self.downsample = ScaledStdConv2d(in_chs, out_chs, 1, stride=stride) if stride > 1 or in_chs != out_chs \
            else None
        self.conv1 = ScaledStdConv2d(in_chs, mid, 1)
        self.conv2 = ScaledStdConv2d(mid, mid, 3, stride=stride, groups=max(mid // 8, 1))
        self.conv3 = ScaledStdConv2d(mid, out_chs, 1)
        self.skipinit_gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        out = F.gelu(x) * self.beta
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(out)))))
        return out * self.alpha * self.skipinit_gain + shortcut


class NFNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = StdConv2d(3, 16, 3, stride=2)
        self.stages = nn.Sequential(NormFreeBlock(16, 32, stride=2), NormFreeBlock(32, 32), NormFreeBlock(32, 64, 2))
        self.final_conv = ScaledStdConv2d(64, 128, 1)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        x = F.gelu(self.final_conv(self.stages(self.stem(x))))
        return self.head(x.mean((2, 3)))


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_standardised_convs_cut_with_their_gains(tmp_path):
    torch.manual_seed(0)
    model, x = NFNet().eval(), torch.randn(2, 3, 32, 32)
    result = shrink.compress(model, x, ratio=0.5)
    assert not result.kept_whole.keys() - {"head"}, result.kept_whole  # only the model output stays whole
    cut = result.model
    assert cut.final_conv.out_channels == 64 and cut.final_conv.gain.shape == (64, 1, 1, 1)
    assert cut.stages[0].conv2.gain.shape[0] == cut.stages[0].conv2.out_channels == 8
    assert _params(cut) < 0.45 * _params(model)
    with torch.no_grad():
        assert cut(x).shape == model(x).shape == (2, 10)
    # Standardisation over a cut fan-in is not masking: those groups are checked for shape only.
    assert "final_conv" in result.plan.checks["exact"]  # read only by the head: exact
    assert result.plan.checks["shape_only"]
    loaded = shrink.load(shrink.save(result, tmp_path / "out"), NFNet())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), cut(x))
    assert shrink.export_onnx(cut, x, tmp_path / "m.onnx").max_rel_diff <= 1e-4


def test_weight_transform_found_by_behaviour_not_name():
    assert std_conv.transforms_weight(StdConv2d(4, 8, 3))
    assert std_conv.transforms_weight(ScaledStdConv2d(4, 8, 3))
    assert not std_conv.transforms_weight(SameConv2d(4, 8, 3))
    assert not std_conv.transforms_weight(nn.Conv2d(4, 8, 3))  # plain layers are never tried
    assert std_conv.extra_rows(ScaledStdConv2d(4, 8, 3)) == ["gain"]
    assert std_conv.extra_rows(StdConv2d(4, 8, 3)) == []
