"""Swin's patch merging: a 2x2 patch's pixels are stacked into the channel dim, channels innermost.

The pattern as timm writes it (timm/models/swin_transformer.py and swin_transformer_v2.py,
``PatchMerging``), written out here: ``x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5)
.flatten(3)`` then a LayerNorm (v1: before the reduction, over 4C; v2: after it) and
``reduction = Linear(4C, out)``. Channel c of pixel k lands at ``k * C + c``; torch-pruning maps only
2-d and 4-d reshapes and left this one as identity, so every residual cut broke the reduction
("mat1 and mat2 shapes cannot be multiplied (1024x192 and 336x96)") and was kept whole.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from oracle import assert_matches_oracle


class PatchMerging(nn.Module):
    def __init__(self, dim: int, out_dim: int, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.norm = nn.LayerNorm(4 * dim if norm_first else out_dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x):
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x)) if self.norm_first else self.norm(self.reduction(x))


class Stage(nn.Module):
    """Channels-last patch embedding, an MLP residual block, patch merging, classifier."""

    def __init__(self, norm_first: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, 2)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.merge = PatchMerging(16, 32, norm_first)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(self.merge(x).mean((1, 2)))


@pytest.mark.parametrize("norm_first", [True, False], ids=["v1", "v2"])
def test_residual_cut_removes_four_columns_per_channel_from_the_reduction(norm_first):
    torch.manual_seed(0)
    model = Stage(norm_first).eval()
    x = torch.randn(2, 3, 16, 16)
    result = shrink.compress(model, x, ratio=0.5)
    assert result.kept_whole == {"head": "model output"}
    assert result.model.stem.out_channels == 8
    assert result.model.merge.reduction.in_features == 4 * 8
    kept = result.plan.kept["merge.reduction"]["in"]
    stem = result.plan.kept["stem"]["out"]
    assert kept == sorted(k * 16 + c for k in range(4) for c in stem)  # pixel k's channel c at k * C + c
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape


def test_cut_equals_masked_where_no_layernorm_reads_the_cut():
    torch.manual_seed(0)
    model = Stage(norm_first=False).eval()
    x = torch.randn(2, 3, 16, 16)
    result = shrink.compress(model, x, ratio={"stem": 0.5})
    assert result.model.merge.reduction.in_features == 32
    assert_matches_oracle(model, result, x)
