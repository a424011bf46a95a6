"""uniform=True on a plain module: a kind healing keeps whole in one layer is kept whole in every layer."""

from __future__ import annotations

import torch
from torch import nn

import shrink


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block(), Block()])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_a_layer_kept_whole_by_healing_keeps_its_kind_whole_everywhere():
    torch.manual_seed(0)
    model = Stack().eval()

    def pin(_module, args):  # model code that reads a stored width
        if args[0].shape[-1] != 16:
            raise RuntimeError("blocks.1.fc2 expects 16 features")

    model.blocks[1].fc2.register_forward_pre_hook(pin)
    x = torch.randn(2, 8)
    uniform = shrink.compress(model, x, ratio=0.5, uniform=True)
    assert [b.fc1.out_features for b in uniform.model.blocks] == [16, 16, 16]
    assert "uniform=True" in uniform.kept_whole["blocks.0.fc1"] and "blocks.1" in uniform.kept_whole["blocks.0.fc1"]
    free = shrink.compress(model, x, ratio=0.5)  # not uniform: the other blocks are still cut
    assert [b.fc1.out_features for b in free.model.blocks] == [8, 16, 8]
    with torch.no_grad():
        torch.testing.assert_close(uniform.model(x), model(x))
