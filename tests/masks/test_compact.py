"""compact: lossless removal of units that contribute nothing, and the cases it must keep."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from models import randomize_bn


def _close(a, b, x):
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def test_lossless_after_structured_masks_and_same_size_as_compress():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(8, 6)
    masked = __import__("copy").deepcopy(model)
    shrink.sparsify(masked, 0.5, structured=True)  # ln_structured (L2) on layers 0 and 2, dim 0
    result = shrink.compact(masked, x)  # still carries weight_orig / weight_mask: accepted
    assert _close(result.model, masked, x) <= 1e-6
    cut = shrink.compress(model, x, ratio=0.5, norm=2)
    assert result.after.params == cut.after.params
    assert result.plan.kept["0"]["out"] == cut.plan.kept["0"]["out"]


def test_dead_relu_units_with_negative_bias_go():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight[[1, 5]] = 0
        model[0].bias[[1, 5]] = -1.0  # ReLU(-1) = 0 for every input
    x = torch.randn(5, 4)
    result = shrink.compact(model, x)
    assert result.model[0].out_features == 6 and _close(result.model, model, x) <= 1e-6


def test_constant_unit_is_folded_into_next_linear():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight[3] = 0
        model[0].bias[3] = 0.7  # ReLU(0.7) = 0.7: a constant the next layer's bias absorbs
    x = torch.randn(5, 4)
    result = shrink.compact(model, x)
    assert result.model[0].out_features == 7 and _close(result.model, model, x) <= 1e-6


def test_unread_columns_make_their_producer_removable():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[2].weight[:, [0, 7]] = 0  # nobody reads units 0 and 7
    x = torch.randn(5, 4)
    result = shrink.compact(model, x)
    assert result.plan.kept["0"]["out"] == [1, 2, 3, 4, 5, 6] and _close(result.model, model, x) <= 1e-6


class _Padded(nn.Module):
    def __init__(self, padding):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 4, 3, padding=padding)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))


@pytest.mark.parametrize("padding, kept_channels", [(1, 6), (0, 5)])
def test_constant_channel_folds_only_into_unpadded_conv(padding, kept_channels):
    """Zero padding makes a constant channel non-constant at the borders: then the unit must stay."""
    model = _Padded(padding=padding)
    with torch.no_grad():
        model.a.weight[2] = 0
        model.a.bias[2] = 0.5
    x = torch.randn(2, 3, 8, 8)
    result = shrink.compact(model, x)
    assert result.model.a.out_channels == kept_channels
    assert any("zero-padded" in reason for reason in result.plan.settings["kept"]) == (padding == 1)
    assert _close(result.model, model, x) <= 1e-5


def test_batchnorm_shift_of_a_dead_filter_is_folded():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    model = randomize_bn(Net())
    with torch.no_grad():
        model.conv.weight[[0, 4]] = 0
    x = torch.randn(2, 3, 8, 8)
    result = shrink.compact(model, x)
    assert result.model.conv.out_channels == 6 and result.model.bn.num_features == 6
    assert _close(result.model, model, x) <= 1e-5


def test_nothing_to_remove_changes_nothing():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    result = shrink.compact(model, torch.randn(3, 4))
    assert result.plan.steps == () and result.after == result.before
