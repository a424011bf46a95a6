"""Resamplers that store and assert their width (layers/resample.py), in a diffusers-style VAE.

The pattern, written out here in our own words: diffusers' ``Downsample2D``/``Upsample2D`` keep
``channels``/``out_channels`` as ints, ``assert hidden_states.shape[1] == self.channels`` in
forward, and hold their conv as ``conv``; resnet blocks are GroupNorm, SiLU, conv twice, with a 1x1
``conv_shortcut`` when the width changes. The model takes ``sample`` and returns a dict whose field
is ``sample`` (diffusers' ``DecoderOutput``), which ONNX Runtime refused as a duplicate name
until export_onnx renamed the output. Before: every width around a resampler was kept whole
("the cut model fails in layer 'down.0': AssertionError").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import shrink


class Downsample2D(nn.Module):
    def __init__(self, channels, use_conv=True, out_channels=None):
        super().__init__()
        self.channels, self.out_channels, self.use_conv = channels, out_channels or channels, use_conv
        self.conv = nn.Conv2d(self.channels, self.out_channels, 3, stride=2, padding=1)

    def forward(self, hidden_states):
        assert hidden_states.shape[1] == self.channels
        return self.conv(hidden_states)


class Upsample2D(nn.Module):
    def __init__(self, channels, use_conv=True, out_channels=None):
        super().__init__()
        self.channels, self.out_channels, self.use_conv = channels, out_channels or channels, use_conv
        self.conv = nn.Conv2d(self.channels, self.out_channels, 3, padding=1)

    def forward(self, hidden_states):
        assert hidden_states.shape[1] == self.channels
        return self.conv(F.interpolate(hidden_states, scale_factor=2.0, mode="nearest"))


class ResnetBlock2D(nn.Module):
    def __init__(self, c_in, c_out, groups=4, affine=True):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in, affine=affine), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out, affine=affine), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class TinyAutoencoder(nn.Module):
    def __init__(self, widths=(16, 32), affine=True):
        super().__init__()
        a, b = widths
        self.conv_in = nn.Conv2d(3, a, 3, padding=1)
        self.down = nn.ModuleList([ResnetBlock2D(a, a, affine=affine), Downsample2D(a)])
        self.mid = ResnetBlock2D(a, b, affine=affine)
        self.up = nn.ModuleList([ResnetBlock2D(b, b, affine=affine), Upsample2D(b, out_channels=a)])
        self.norm_out = nn.GroupNorm(4, a, affine=affine)
        self.conv_out = nn.Conv2d(a, 3, 3, padding=1)

    def forward(self, sample):
        h = self.conv_in(sample)
        for block in [*self.down, self.mid, *self.up]:
            h = block(h)
        return {"sample": self.conv_out(F.silu(self.norm_out(h)))}


def test_resamplers_follow_the_cut_and_the_vae_exports(tmp_path):
    for affine in (True, False):  # GroupNorm with and without weights
        torch.manual_seed(0)
        model, x = TinyAutoencoder(affine=affine).eval(), torch.randn(1, 3, 16, 16)
        result = shrink.compress(model, x, ratio=0.5)

        assert set(result.kept_whole) == {"conv_out"}, result.kept_whole
        assert result.after.params < 2 / 3 * result.before.params
        cut = result.model.eval()
        for block in (cut.down[1], cut.up[1]):
            assert (block.channels, block.out_channels) == (block.conv.in_channels, block.conv.out_channels)
        assert cut.down[1].channels < 16
        with torch.no_grad():
            assert cut(x)["sample"].shape == model(x)["sample"].shape
            loaded = shrink.load(shrink.save(result, tmp_path / f"out{affine}"), TinyAutoencoder(affine=affine))
            torch.testing.assert_close(loaded.eval()(x)["sample"], cut(x)["sample"], rtol=0, atol=0)
        rep = shrink.export_onnx(cut, x, tmp_path / f"m{affine}.onnx")
        assert rep.max_rel_diff <= 1e-4 and [o.name for o in rep.outputs] == ["sample_out"]
