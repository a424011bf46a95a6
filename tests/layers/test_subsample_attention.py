"""Twins' global subsampled attention (separate q, fused kv, strided ``sr``; layers/subsample_attention.py):
each head loses dims with the residual width, ``sr`` loses as many of its own rows."""

from __future__ import annotations

import torch
from torch import nn

import shrink
from branch_models import GlobalSubSampleAttn
from oracle import assert_matches_oracle
from shrink.layers import tied_attention


class Wrap(nn.Module):
    """embed -> x + attention(x, size) -> head, no normalisation around it."""

    def __init__(self, sr_ratio: int = 1, dim: int = 32, heads: int = 4, side: int = 4):
        super().__init__()
        self.side = side
        self.embed, self.attn, self.head = nn.Linear(12, dim), GlobalSubSampleAttn(dim, heads, sr_ratio), nn.Linear(dim, 5)

    def forward(self, x):
        x = self.embed(x)
        return self.head((x + self.attn(x, (self.side, self.side))).mean(1))


def test_found_as_attention_tied_to_its_width():
    block = tied_attention.as_tied("attn", GlobalSubSampleAttn(32, 4, sr_ratio=2))
    assert block is not None and block.kv is not None and block.sr is not None
    assert block.width == 32 and block.head_dim == 8
    assert [type(m).__name__ for m in block.layers()] == ["Linear", "Linear", "Conv2d"]


def test_head_dims_follow_the_residual_and_masking_is_exact():
    # Before: the residual width that proj writes was kept whole (nothing in the block was cut).
    model, x = Wrap().eval(), torch.randn(2, 16, 12)
    result = shrink.compress(model, x, ratio=0.5)
    attn = result.model.attn
    assert result.model.embed.out_features == 16
    assert (attn.q.out_features, attn.kv.out_features, attn.proj.in_features, attn.dim) == (16, 32, 16, 16)
    assert attn.num_heads == 4  # heads stay, each half as wide
    assert_matches_oracle(model, result, x)


def test_sr_loses_its_weakest_rows_with_its_norm_and_kv_columns(tmp_path):
    model, x = Wrap(sr_ratio=2).eval(), torch.randn(2, 16, 12)
    with torch.no_grad():
        model.attn.sr.weight[[3, 7, 11, 20, 21, 22, 23, 30, 31, 1, 2, 4, 5, 6, 8, 9]] *= 1e-3
    result = shrink.compress(model, x, ratio=0.5)
    attn = result.model.attn
    assert (attn.sr.in_channels, attn.sr.out_channels, attn.norm.normalized_shape, attn.kv.in_features) == \
        (16, 16, (16,), 16)
    kept = result.plan.kept["attn.sr"]["out"]
    assert kept == [0, 10, 12, 13, 14, 15, 16, 17, 18, 19, 24, 25, 26, 27, 28, 29]  # the 16 strongest rows
    assert result.plan.kept["attn.kv"]["in"] == kept and result.plan.kept["attn.norm"]["out"] == kept
    with torch.no_grad():
        out = result.model(x)
    assert out.shape == (2, 5)
    shrink.save(result, tmp_path / "out")
    torch.manual_seed(1)
    loaded = shrink.load(tmp_path / "out", Wrap(sr_ratio=2))
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    assert shrink.export_onnx(result.model, x, tmp_path / "gsa.onnx").max_rel_diff <= 1e-4
