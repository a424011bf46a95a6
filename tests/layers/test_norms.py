"""Norms without affine weights (layers/norms.py), at each position, and a MONAI-style U-Net.

The MONAI pattern, written out here in our own words: every block is a conv followed by an
``ADN`` sequence (norm, dropout, activation). The norm is an ``InstanceNorm`` (``affine=False`` by
default, ``affine=True`` in BasicUNet and DynUNet), the activation a PReLU with one slope for all
channels or an in-place LeakyReLU. ``ResidualUnit`` adds a 1x1 (or strided) conv of its input to
its subunits' output; ``UNet`` nests ``SkipConnection`` blocks that concatenate their input with
their submodule's output. Before: an InstanceNorm followed by an in-place activation dropped out
of the traced graph and kept its old ``num_features`` ("expected input's size at dim=1 to match
num_features (8), but got: 4"), and a one-slope PReLU made every cut through it fail ("int()
argument must be ... not 'NoneType'"), so MONAI's UNet lost nothing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shrink
from oracle import assert_matches_oracle

_INSTANCE = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_UP = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class ADN(nn.Sequential):
    """Norm, dropout, activation, in the order the letters say (MONAI's default: "NDA")."""

    def __init__(self, channels: int, dims: int = 2, affine: bool = False, act: str = "prelu", order: str = "NDA"):
        super().__init__()
        parts = {"N": _INSTANCE[dims](channels, affine=affine), "D": nn.Dropout(0.0),
                 "A": nn.PReLU() if act == "prelu" else nn.LeakyReLU(0.1, inplace=True)}
        for letter in order:
            self.add_module(letter, parts[letter])


class Convolution(nn.Sequential):
    """A conv (or transposed conv) and its ADN; ``conv_only`` leaves the ADN out."""

    def __init__(self, c_in, c_out, dims=2, stride=1, kernel=3, transposed=False, conv_only=False, **adn):
        super().__init__()
        if transposed:
            self.conv = _UP[dims](c_in, c_out, kernel, stride, padding=kernel // 2, output_padding=stride - 1)
        else:
            self.conv = _CONV[dims](c_in, c_out, kernel, stride, padding=kernel // 2)
        if not conv_only:
            self.adn = ADN(c_out, dims, **adn)


class ResidualUnit(nn.Module):
    """Subunits of Convolution; the input, through a conv when the width or size changes, is added."""

    def __init__(self, c_in, c_out, dims=2, stride=1, subunits=2, last_conv_only=False, padding=None, **adn):
        super().__init__()
        kernel = 3
        padding = kernel // 2 if padding is None else padding  # "same" padding unless given
        self.conv = nn.Sequential()
        channels, s = c_in, stride
        for i in range(subunits):
            only = last_conv_only and i == subunits - 1
            self.conv.add_module(f"unit{i}", Convolution(channels, c_out, dims, s, kernel, conv_only=only, **adn))
            channels, s = c_out, 1
        self.residual = nn.Identity()
        if stride != 1 or c_in != c_out:
            k, p = (kernel, padding) if stride != 1 else (1, 0)  # only the width changes: a 1x1 conv
            self.residual = _CONV[dims](c_in, c_out, k, stride, p)

    def forward(self, x):
        return self.conv(x) + self.residual(x)


class SkipConnection(nn.Module):
    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x):
        return torch.cat([x, self.submodule(x)], dim=1)


class TinyUNet(nn.Module):
    """MONAI's UNet with residual units: down, nested skip connections, transposed conv up."""

    def __init__(self, dims=2, channels=(8, 16, 32), c_in=1, c_out=2, **adn):
        super().__init__()

        def level(c_from, c_to, rest, is_top):
            c = rest[0]
            if len(rest) > 2:  # a nested level returns its own width c
                sub, c_up = level(c, c, rest[1:], False), 2 * c
            else:  # the bottom: one residual unit at stride 1
                sub, c_up = ResidualUnit(c, rest[1], dims, 1, **adn), c + rest[1]
            down = ResidualUnit(c_from, c, dims, 2, **adn)
            up = nn.Sequential(
                Convolution(c_up, c_to, dims, 2, transposed=True, conv_only=is_top, **adn),
                ResidualUnit(c_to, c_to, dims, 1, subunits=1, last_conv_only=is_top, **adn))
            return nn.Sequential(down, SkipConnection(sub), up)

        self.model = level(c_in, c_out, channels, True)

    def forward(self, x):
        return self.model(x)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_round_trip(model, result, x, tmp_path, build):
    """Shapes kept, save -> load identical, ONNX parity."""
    cut = result.model.eval()
    with torch.no_grad():
        assert cut(x).shape == model(x).shape
        loaded = shrink.load(shrink.save(result, tmp_path / "out"), build()).eval()
        torch.testing.assert_close(loaded(x), cut(x), rtol=0, atol=0)
    assert shrink.export_onnx(cut, x, tmp_path / "m.onnx").max_rel_diff <= 1e-4


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("affine,act", [(False, "prelu"), (True, "leaky")])
def test_monai_style_unet_is_cut_through_its_norms(dims, affine, act, tmp_path):
    torch.manual_seed(0)
    build = lambda: TinyUNet(dims, affine=affine, act=act).eval()  # noqa: E731
    model = build()
    x = torch.randn(1, 1, *([16] * dims))
    result = shrink.compress(model, x, ratio=0.5)

    assert set(result.kept_whole) <= {"model.2.1.conv.unit0.conv"}, result.kept_whole  # the output conv
    assert result.after.params < 2 / 3 * result.before.params
    for norm in (m for m in result.model.modules() if isinstance(m, nn.modules.instancenorm._InstanceNorm)):
        assert norm.num_features < 32  # every norm was cut with its conv
    assert_matches_oracle(model, result, x)  # instance norms are per channel: the cut equals masking
    _check_round_trip(model, result, x, tmp_path, build)


# Norms with nothing to slice but their width, built the way they appear in the wild.
class ChannelsLastLayerNorm(nn.Module):
    """LayerNorm over the channels of an image, without affine weights (a diffusion block's pre-norm)."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c, elementwise_affine=False)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


NORMS = {
    "instance": lambda c: nn.InstanceNorm2d(c),
    "instance_running_stats": lambda c: nn.InstanceNorm2d(c, track_running_stats=True),
    "batch": lambda c: nn.BatchNorm2d(c, affine=False),
    "group": lambda c: nn.GroupNorm(4, c, affine=False),
    "layer": ChannelsLastLayerNorm,
}


class AfterConv(nn.Module):
    def __init__(self, norm, c=16):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(3, c, 3, padding=1), norm(c)
        self.conv2, self.norm2 = nn.Conv2d(c, c, 3, padding=1), norm(c)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x):
        x = F.leaky_relu(self.norm1(self.conv1(x)), 0.1, inplace=True)
        return self.head(F.leaky_relu(self.norm2(self.conv2(x)), 0.1, inplace=True))


class InResidual(nn.Module):
    def __init__(self, norm, c=16):
        super().__init__()
        self.stem, self.norm0 = nn.Conv2d(3, c, 3, padding=1), norm(c)
        self.conv1, self.norm1 = nn.Conv2d(c, c, 3, padding=1), norm(c)
        self.conv2, self.norm2 = nn.Conv2d(c, c, 3, padding=1), norm(c)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x):
        x = F.silu(self.norm0(self.stem(x)))
        y = self.norm2(self.conv2(F.silu(self.norm1(self.conv1(x)))))
        return self.head(F.silu(x + y))


class BeforeConcat(nn.Module):
    def __init__(self, norm, c=16):
        super().__init__()
        self.a, self.norm_a = nn.Conv2d(3, c, 3, padding=1), norm(c)
        self.b, self.norm_b = nn.Conv2d(3, c, 1), norm(c)
        self.mix, self.norm_mix = nn.Conv2d(2 * c, c, 3, padding=1), norm(c)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x):
        x = torch.cat([F.relu(self.norm_a(self.a(x))), F.relu(self.norm_b(self.b(x)))], dim=1)
        return self.head(F.relu(self.norm_mix(self.mix(x))))


def _width(norm: nn.Module) -> int:
    norm = getattr(norm, "norm", norm)
    if isinstance(norm, nn.GroupNorm):
        return norm.num_channels
    if isinstance(norm, nn.LayerNorm):
        return norm.normalized_shape[-1]
    return norm.num_features


@pytest.mark.parametrize("position", [AfterConv, InResidual, BeforeConcat], ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", sorted(NORMS))
def test_norm_without_affine_is_cut_with_its_producer(kind, position, tmp_path):
    torch.manual_seed(0)
    build = lambda: position(NORMS[kind]).eval()  # noqa: E731
    model, x = build(), torch.randn(2, 3, 16, 16)
    if kind == "instance_running_stats":  # statistics that differ per channel, so a wrong slice shows
        for m in model.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    result = shrink.compress(model, x, ratio=0.5)

    assert set(result.kept_whole) == {"head"}, result.kept_whole
    assert result.after.params < 2 / 3 * result.before.params
    modules = dict(result.model.named_modules())
    for name, norm in model.named_modules():
        if "." in name or not name.startswith("norm"):
            continue
        producer = {"norm0": "stem", "norm_mix": "mix"}.get(name, name.replace("norm", "conv").replace("conv_", ""))
        cut = modules[name]
        assert _width(cut) == modules[producer].out_channels < _width(norm)
        if isinstance(cut, nn.GroupNorm):
            assert cut.num_groups == 4  # the same channels leave every group
        if getattr(cut, "track_running_stats", False):
            kept = result.plan.kept[producer]["out"]
            torch.testing.assert_close(cut.running_mean, norm.running_mean[kept])
            torch.testing.assert_close(cut.running_var, norm.running_var[kept])
    if kind not in ("group", "layer"):  # per-channel norms: the cut equals masking
        assert_matches_oracle(model, result, x)
    _check_round_trip(model, result, x, tmp_path, build)
