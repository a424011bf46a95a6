"""Sequencer's LSTM2d: bidirectional LSTMs read a [B, H, W, C] map by columns and by rows, concatenated, then fc.

The pattern as timm writes it (timm/models/sequencer.py, RNN2dBase.forward with union="cat"):
the horizontal branch reshapes the LSTM's [B*H, W, 2h] output straight into the concatenation.
torch-pruning inferred that reshape as a stride-2 flatten (it read the whole concatenation's width
as the reshape's), so the cut removed the wrong columns of fc and the healing kept every LSTM whole.
"""

from __future__ import annotations

import torch
from torch import nn

import shrink
from oracle import assert_matches_oracle


class LSTM2d(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.rnn_v = nn.LSTM(input_size, hidden_size, 1, batch_first=True, bidirectional=True)
        self.rnn_h = nn.LSTM(input_size, hidden_size, 1, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(4 * hidden_size, input_size)

    def forward(self, x):
        B, H, W, C = x.shape
        v = x.permute(0, 2, 1, 3)
        v = v.reshape(-1, H, C)
        v, _ = self.rnn_v(v)
        v = v.reshape(B, W, H, -1)
        v = v.permute(0, 2, 1, 3)
        h = x.reshape(-1, W, C)
        h, _ = self.rnn_h(h)
        h = h.reshape(B, H, W, -1)
        x = torch.cat([v, h], dim=-1)
        return self.fc(x)


class Sequencer2dBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.rnn_tokens = LSTM2d(dim, hidden)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp_channels = nn.Sequential(nn.Linear(dim, 3 * dim), nn.GELU(), nn.Linear(3 * dim, dim))

    def forward(self, x):
        x = x + self.rnn_tokens(self.norm1(x))
        return x + self.mlp_channels(self.norm2(x))


class Sequencer2d(nn.Module):
    """Patch embedding to channels-last, two LSTM2d blocks, mean pool, classifier."""

    def __init__(self, dim: int = 16, hidden: int = 12):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(Sequencer2dBlock(dim, hidden), Sequencer2dBlock(dim, hidden))
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        x = self.blocks(x)
        return self.head(x.mean((1, 2)))


def test_lstm2d_hidden_units_cut_in_both_directions_and_fc_follows(tmp_path):
    torch.manual_seed(0)
    model = Sequencer2d().eval()
    x = torch.randn(2, 3, 16, 16)
    result = shrink.compress(model, x, ratio=0.5)
    assert result.kept_whole == {"head": "model output"}
    for block in result.model.blocks:
        mixer = block.rnn_tokens
        assert mixer.rnn_v.hidden_size == mixer.rnn_h.hidden_size == 6
        assert mixer.fc.in_features == 4 * 6  # [v fwd | v bwd | h fwd | h bwd]
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape
    report = shrink.export_onnx(result.model, x, tmp_path / "m.onnx", dynamic_batch=False)
    assert report.max_abs_diff < 1e-4


def test_lstm2d_cut_equals_masked():
    """With the residual width kept (its LayerNorms make a masked reference inexact), the LSTM and MLP cuts are exact."""
    torch.manual_seed(0)
    model = Sequencer2d().eval()
    x = torch.randn(2, 3, 16, 16)
    result = shrink.compress(model, x, ratio=0.5, ignore=["stem"])
    assert result.model.blocks[1].rnn_tokens.rnn_h.hidden_size == 6
    assert result.model.blocks[1].rnn_tokens.fc.out_features == 16
    assert_matches_oracle(model, result, x)
