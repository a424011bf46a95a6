"""Weight norm, spectral norm and other parametrized weights are cut (layers/parametrized.py).

The fixture follows HiFi-GAN's generator (jik876/hifi-gan, models.py): every conv wrapped in the
older ``torch.nn.utils.weight_norm`` hook, transposed 1-d convs that upsample, and residual blocks
of dilated convs summed into the stream. Before: ``copy.deepcopy`` refused the model (its weights
are non-leaf tensors), and with the newer parametrizations every cut failed ("attribute 'weight'
already exists"), so nothing was removed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.nn.utils import spectral_norm, weight_norm

import shrink
from oracle import assert_matches_oracle
from shrink._util.clone import clone
from shrink.layers import parametrized

SLOPE = 0.1


def _norms(style: str):
    """The wrapper a model was written with: the older hook or the parametrization."""
    return {"hook": weight_norm, "parametrization": parametrizations.weight_norm}[style]


class DilatedResBlock(nn.Module):
    """Pairs of dilated convs, each pair's output added to the stream (HiFi-GAN's ResBlock1)."""

    def __init__(self, channels: int, norm, dilations=(1, 3)):
        super().__init__()
        self.convs1 = nn.ModuleList(norm(nn.Conv1d(channels, channels, 3, dilation=d, padding=d)) for d in dilations)
        self.convs2 = nn.ModuleList(norm(nn.Conv1d(channels, channels, 3, padding=1)) for _ in dilations)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, SLOPE)), SLOPE))
            x = xt + x
        return x


class Vocoder(nn.Module):
    """Mel frames in, waveform out: conv, then (upsample, residual blocks averaged) twice, then conv."""

    def __init__(self, style: str = "hook", mels: int = 8, width: int = 32):
        super().__init__()
        norm = _norms(style)
        self.conv_pre = norm(nn.Conv1d(mels, width, 7, padding=3))
        self.ups = nn.ModuleList(norm(nn.ConvTranspose1d(width // 2**i, width // 2 ** (i + 1), 4, 2, padding=1))
                                 for i in range(2))
        self.resblocks = nn.ModuleList(DilatedResBlock(width // 2 ** (i + 1), norm) for i in range(2) for _ in range(2))
        self.conv_post = norm(nn.Conv1d(width // 4, 1, 7, padding=3))

    def forward(self, x):
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, SLOPE))
            x = (self.resblocks[2 * i](x) + self.resblocks[2 * i + 1](x)) / 2
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


def _folded(model: nn.Module) -> nn.Module:
    """The same function with plain weights, for the masking oracle (which writes into weights)."""
    plain = clone(model)
    for m in list(plain.modules()):
        parametrized.fold(m)
    return plain


@pytest.mark.parametrize("style", ["hook", "parametrization"])
def test_weight_normed_vocoder_is_cut_exactly_and_keeps_its_weight_norm(style, tmp_path):
    torch.manual_seed(0)
    model = Vocoder(style).eval()
    x = torch.randn(2, 8, 10)
    result = shrink.compress(model, x, ratio=0.5)

    assert result.after.params < 0.5 * result.before.params
    assert result.kept_whole == {"conv_post": "model output"}
    assert set(result.plan.checks["exact"]) == {s.layer for s in result.plan.steps}  # verified against masking
    assert_matches_oracle(_folded(model), result, x)
    pre = result.model.conv_pre
    assert pre.out_channels == 16
    if style == "hook":  # the same kind of weight norm, at the new width
        assert pre.weight_g.shape == (16, 1, 1) and pre.weight_v.shape == (16, 8, 7)
    else:
        assert parametrize.is_parametrized(pre, "weight")
        assert pre.parametrizations.weight.original0.shape == (16, 1, 1)

    shrink.save(result, tmp_path / "vocoder")
    loaded = shrink.load(tmp_path / "vocoder", Vocoder(style).eval())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model(x))
    report = shrink.export_onnx(result.model, x, tmp_path / "vocoder.onnx")
    assert report.max_abs_diff < 1e-4


def test_spectral_norm_is_folded_into_the_cut_layers_only():
    """A cut changes the top singular value, so the cut layers keep plain weights; the others keep theirs."""
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Conv2d(3, 16, 3)), nn.ReLU(), spectral_norm(nn.Conv2d(16, 8, 3)),
                          nn.ReLU(), nn.Flatten(), spectral_norm(nn.Linear(8 * 4 * 4, 4))).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model(x)  # spectral norm's power iteration runs in training only; eval uses the stored vectors
    result = shrink.compress(model, x, ratio={"0": 0.5})  # the first conv's filters only

    assert result.model[0].out_channels == 8 and result.model[2].in_channels == 8
    for cut in (result.model[0], result.model[2]):
        assert not hasattr(cut, "weight_orig")  # folded: the weight it computed, cut
    assert hasattr(result.model[5], "weight_orig")  # untouched: still spectral-normed
    assert_matches_oracle(_folded(model), result, x)


def test_models_with_hook_computed_weights_can_be_copied():
    model = Vocoder("hook")
    twin = clone(model)
    x = torch.randn(1, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x))
    with torch.no_grad():
        twin.conv_pre.weight_g.mul_(2)
    assert not torch.equal(twin.conv_pre.weight_g, model.conv_pre.weight_g)  # a copy, not shared


def test_the_callers_parametrized_model_still_works_after_compress():
    """torch gives a deep copy of a parametrized module the original's generated class; removing the
    copy's parametrization used to delete the original's ``weight`` property with it."""
    model = Vocoder("parametrization").eval()
    x = torch.randn(1, 8, 6)
    with torch.no_grad():
        before = model(x)
    shrink.compress(model, x, ratio=0.5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
