"""Patterns of torchvision's models (benchmarks/coverage_torchvision.py), as fixtures: each compresses and matches the oracle."""

from __future__ import annotations

import torch

import shrink
from oracle import assert_matches_oracle
from tv_models import RaftLookup, TorchvisionSwin


def test_raft_correlation_lookup_concat_of_unknown_width():
    # torch-pruning summed the unknown widths of the lookup's concat (TypeError) in the model's own forward
    model = RaftLookup().eval()
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(1, 3, 32, 32, generator=g), torch.randn(1, 3, 32, 32, generator=g))
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.flow_head[0].out_channels == 8 and result.model.convf1.out_channels == 4
    assert_matches_oracle(model, result, x)


def test_torchvision_swin_functional_attention_and_channels_last_patch_merging():
    # the attention passes its layers' weights to F.linear (untraced: whole blocks became black boxes),
    # and patch merging slices rows of [B, H, W, C] maps (torch-pruning mapped them as channel slices)
    model = TorchvisionSwin().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = shrink.compress(model, x, ratio=0.5)
    assert not result.plan.checks.get("black_boxes") and set(result.kept_whole) == {"head"}
    block = result.model.features[1][0]
    assert block.attn.qkv.weight.shape == (24, 8) and block.mlp[0].out_features == 32
    assert result.model.features[2].norm.normalized_shape == (32,)
    assert_matches_oracle(model, result, x)
