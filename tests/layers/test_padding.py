"""Zero-padded channel shortcuts (CIFAR ResNet option A): the padded width is kept whole, the rest cut."""

from __future__ import annotations

import torch

import shrink
from oracle import assert_matches_oracle
from real_models import CifarResNetA
from shrink.layers import padding


def test_padded_stream_is_kept_whole_with_the_reason():
    model = CifarResNetA().eval()
    x = torch.randn(2, 3, 16, 16)
    report = shrink.analyze(model, x)
    whole = dict(report.kept_whole)
    assert whole["conv1"] == padding.REASON and whole["layer2.0.conv2"] == padding.REASON
    result = shrink.compress(model, x)
    assert result.model.conv1.out_channels == 8 and result.model.linear.in_features == 16
    assert result.model.layer1[0].conv1.out_channels == 4 and result.model.layer2[1].conv1.out_channels == 8
    assert_matches_oracle(model, result, x)


def test_a_spatial_pad_is_not_a_channel_pad():
    class SpatialPad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 3)

        def forward(self, x):
            return self.b(torch.nn.functional.pad(self.a(x), (1, 1, 1, 1)))

    result = shrink.compress(SpatialPad(), torch.randn(1, 3, 8, 8), ratio=0.5)
    assert result.model.a.out_channels == 4
