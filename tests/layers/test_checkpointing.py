"""Blocks run through reentrant activation checkpointing are traced and cut (layers/checkpointing.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import shrink
from oracle import assert_matches_oracle


class CheckpointedNet(nn.Module):
    """A stem, then a block run through torch.utils.checkpoint, as training code writes it."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = checkpoint(self.block, self.stem(x), use_reentrant=self.reentrant)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpointed_block_is_cut_like_any_other(reentrant):
    """Reentrant checkpointing used to hide the block: the stem's cut broke it and nothing was removed."""
    torch.manual_seed(0)
    model = CheckpointedNet(reentrant).eval()
    x = torch.randn(2, 3, 8, 8)
    result = shrink.compress(model, x, ratio=0.5)
    assert result.kept_whole == {"fc": "model output"}
    assert result.model.stem[0].out_channels == result.model.block[0].out_channels == 8
    assert_matches_oracle(model, result, x)


def test_checkpointing_works_again_after_tracing():
    model = CheckpointedNet(reentrant=True).train()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    shrink.analyze(model, x, check=False)
    model(x).sum().backward()  # the reentrant checkpoint is restored: its backward recomputes the block
    assert model.block[0].weight.grad is not None and x.grad is not None
    assert torch.utils.checkpoint.CheckpointFunction.apply.__func__ is torch.autograd.Function.apply.__func__
