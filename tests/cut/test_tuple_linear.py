"""A Linear subclass that returns a tuple (PhiMoE's and Llama 4's routers give ``(logits, indices)``)."""

from __future__ import annotations

import torch
from torch import nn

import shrink


class Router(nn.Linear):
    def forward(self, x):
        logits = super().forward(x)
        weights, indices = logits.softmax(-1).topk(1, dim=-1)
        return weights, indices


class Routed(nn.Module):
    def __init__(self):
        super().__init__()
        self.router = Router(8, 4, bias=False)
        self.up, self.down = nn.Linear(8, 32), nn.Linear(32, 8)

    def forward(self, x):
        weights, _ = self.router(x)
        return self.down(torch.relu(self.up(x))) * weights


def test_a_linear_returning_a_tuple_is_traced_and_the_rest_is_cut():
    torch.manual_seed(0)
    model = Routed().eval()
    x = torch.randn(2, 5, 8)
    result = shrink.compress(model, x, ratio=0.5)  # torch-pruning alone: 'tuple' object has no attribute 'shape'
    assert result.model.up.out_features == 16
    assert result.model(x).shape == model(x).shape
