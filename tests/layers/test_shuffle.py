"""Channel shuffle (ShuffleNetV2): the shuffled width is kept whole, the branches inside are cut."""

from __future__ import annotations

import torch

import shrink
from oracle import assert_matches_oracle
from real_models import ShuffleNetV2
from shrink.layers import shuffle


def test_shuffled_width_kept_whole_and_branches_cut():
    model = ShuffleNetV2().eval()
    x = torch.randn(2, 3, 32, 32)
    report = shrink.analyze(model, x)
    assert shuffle.REASON in dict(report.kept_whole).values()
    result = shrink.compress(model, x)
    block = result.model.stages[1]  # stride 1: x1 passes, x2 goes through branch2
    assert block.branch2[0].out_channels == 4 and block.branch2[3].out_channels == 4
    assert block.branch2[5].out_channels == 8  # concatenated and shuffled: whole
    assert result.after.params < result.before.params
    assert_matches_oracle(model, result, x)
