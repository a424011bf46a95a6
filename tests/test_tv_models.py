"""Patterns of torchvision's models (benchmarks/coverage_torchvision.py), as fixtures: each compresses and matches the oracle."""

from __future__ import annotations

import pytest
import torch

import shrink
from oracle import assert_matches_oracle
from tv_models import (RaftLookup, RelativePositionalMultiHeadAttention, ShiftedWindowAttention, TorchvisionMaxViT,
                       TorchvisionSwin)


def test_raft_correlation_lookup_concat_of_unknown_width():
    # torch-pruning summed the unknown widths of the lookup's concat (TypeError) in the model's own forward
    model = RaftLookup().eval()
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(1, 3, 32, 32, generator=g), torch.randn(1, 3, 32, 32, generator=g))
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.flow_head[0].out_channels == 8 and result.model.convf1.out_channels == 4
    assert_matches_oracle(model, result, x)


class _Residual(torch.nn.Module):
    """embed -> x + attention(x) -> head, no normalisation, so the cut must equal masking exactly."""

    def __init__(self, attn, dim=32):
        super().__init__()
        self.embed, self.attn, self.head = torch.nn.Linear(12, dim), attn, torch.nn.Linear(dim, 5)

    def forward(self, x):
        x = self.embed(x)
        return self.head((x + self.attn(x)).mean(2))


@pytest.mark.parametrize("cosine", [False, True], ids=["v1", "v2_cosine"])
def test_torchvision_swin_functional_attention_and_channels_last_patch_merging(cosine):
    # the attention passes its layers' weights to F.linear (untraced: whole blocks became black boxes),
    # patch merging slices rows of [B, H, W, C] maps (torch-pruning mapped them as channel slices), and
    # V2's 3-d logit_scale turned the merge's concat mapping off
    model = TorchvisionSwin(cosine=cosine).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = shrink.compress(model, x, ratio=0.5)
    assert not result.plan.checks.get("black_boxes") and set(result.kept_whole) == {"head"}
    block = result.model.features[1][0]
    assert block.attn.qkv.weight.shape == (24, 8) and block.mlp[0].out_features == 32
    assert result.model.features[2].norm.normalized_shape == (32,)
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape

    # the attention alone, without LayerNorms over the cut width: the cut equals masking exactly
    model = _Residual(ShiftedWindowAttention(32, [4, 4], [2, 2], num_heads=4, cosine=cosine)).eval()
    x = torch.randn(1, 8, 8, 12, generator=torch.Generator().manual_seed(0))  # [B, H, W, C]
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.attn.qkv.weight.shape == (48, 16) and result.model.attn.proj.weight.shape == (16, 16)
    assert_matches_oracle(model, result, x)


def test_maxvit_attention_head_dims_follow_the_input_width():
    # to_qkv/merge were not known as a fused attention: the head cut broke the reshape and healing kept them whole
    model = _Residual(RelativePositionalMultiHeadAttention(32, 8, 4)).eval()
    x = torch.randn(2, 3, 4, 12, generator=torch.Generator().manual_seed(0))  # [B, G, P, D]
    result = shrink.compress(model, x, ratio=0.5)
    attn = result.model.attn
    assert attn.to_qkv.weight.shape == (48, 16) and attn.merge.weight.shape == (16, 16)
    assert attn.n_heads == 4 and attn.head_dim == 4 and attn.scale_factor == 32**-0.5
    assert_matches_oracle(model, result, x)

    model = TorchvisionMaxViT().eval()
    result = shrink.compress(model, torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), ratio=0.5)
    assert set(result.kept_whole) == {"classifier.3"}
    assert result.model.layers[1].attn_layer[1].to_qkv.weight.shape == (24, 8)
