"""Widths fixed by a constant (PointNet): kept whole with the reason; everything else still cut."""

from __future__ import annotations

import torch
from torch import nn

import shrink
from oracle import assert_matches_oracle
from real_models import PointNetCls
from shrink.layers import constants


def test_pointnet_hard_coded_widths_are_kept_whole():
    model = PointNetCls().eval()
    x = torch.randn(4, 3, 32)
    whole = dict(shrink.analyze(model, x).kept_whole)
    assert whole["stn.fc3"] == constants.REASON  # + torch.eye(3).view(1, 9): 9 wide
    assert whole["stn.conv3"] == whole["conv3"] == constants.VIEW_REASON  # x.view(-1, 64)
    result = shrink.compress(model, x)
    assert result.model.conv1.out_channels == 8 and result.model.stn.fc1.out_features == 16
    assert result.model.conv3.out_channels == 64 and result.model.stn.fc3.out_features == 9
    assert_matches_oracle(model, result, x, atol=1e-4)


class LeNetFlatten(nn.Module):
    def __init__(self, computed: bool):
        super().__init__()
        self.computed = computed
        self.conv, self.fc = nn.Conv2d(1, 8, 3), nn.Linear(8 * 2 * 2, 3)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.conv(x), 2)
        return self.fc(x.view(x.size(0), -1) if self.computed else x.view(-1, 8 * 2 * 2))


def test_a_width_written_in_a_view_is_kept_and_a_computed_one_is_cut():
    x = torch.randn(2, 1, 8, 8)
    assert shrink.compress(LeNetFlatten(computed=False), x, ratio=0.5).model.conv.out_channels == 8
    assert shrink.compress(LeNetFlatten(computed=True), x, ratio=0.5).model.conv.out_channels == 4


def test_swin_window_view_reads_the_width_and_is_cut():
    """windows.view(-1, ws * ws, C) takes C from the input: the residual width is still cut."""
    from real_models import Swin

    model = Swin().eval()
    result = shrink.compress(model, torch.randn(2, 3, 16, 16))
    assert result.model.patch_embed.out_channels == 8
    assert result.model.blocks[0].attn.qkv.out_features == 24 and result.model.blocks[0].attn.num_heads == 2


class ObjectQueries(nn.Module):
    """DETR's decoder start (facebookresearch/detr models/transformer.py, detr.py): the object queries
    are an Embedding's table read as ``self.query_embed.weight`` (never called), and the decoder's
    stream starts from ``tgt = torch.zeros_like(query_embed)``, to which each layer adds its output."""

    def __init__(self):
        super().__init__()
        self.query_embed = nn.Embedding(6, 16)
        self.memory = nn.Linear(8, 16)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        query = self.query_embed.weight.unsqueeze(0).repeat(x.shape[0], 1, 1)
        tgt = torch.zeros_like(query)
        tgt = tgt + self.fc2(torch.relu(self.fc1(tgt + query + self.memory(x).unsqueeze(1))))
        return self.head(tgt)


def test_zeros_like_and_a_table_read_directly_follow_the_cut_width():
    torch.manual_seed(0)
    model = ObjectQueries().eval()
    x = torch.randn(2, 8)
    # Before: the zeros were a fixed-width constant, and the table was outside the graph (cutting
    # the width it is added to broke the model): the 16-wide stream stayed whole.
    result = shrink.compress(model, x, ratio=0.5)
    assert result.kept_whole == {"head": "model output"}
    assert result.model.query_embed.weight.shape == (6, 8) and result.model.fc2.out_features == 8
    assert result.plan.kept["query_embed.weight"]
    with torch.no_grad():
        out = result.model(x)
    assert out.shape == (2, 6, 3)
    assert_matches_oracle(model, result, x, atol=1e-5)
