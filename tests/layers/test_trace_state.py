"""A trace leaves nothing behind: every patch of torch-pruning and torch is undone, also after an
error, and nothing a trace noted changes what a later call sees (layers/registry.py's `Seen`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.utils import checkpoint

import shrink
from shrink.cut import graph
from shrink.layers import attention
from tests.real_models import NanoGPT, RNNClassifier, TransformerModel


def _globals() -> dict:
    """What the families patch while a trace runs: torch-pruning's classes and functions, torch's."""
    node = tp.dependency.node.Node
    return {
        "Node.add_output": node.add_output,
        "Node.enable_index_mapping": vars(node).get("enable_index_mapping"),
        "init_shape_information": tp.dependency.shape_infer.init_shape_information,
        "F.linear": F.linear,
        "CheckpointFunction.apply": vars(checkpoint.CheckpointFunction).get("apply"),
        "function modes": len(torch.overrides._get_current_function_mode_stack()),
    }


def _leftovers(model: nn.Module) -> list[str]:
    """Forwards set on instances, hooks still registered, parameters that were buffers."""
    found = []
    for name, m in model.named_modules():
        if "forward" in m.__dict__:
            found.append(f"{name}: forward replaced")
        if m._forward_hooks or m._forward_pre_hooks:
            found.append(f"{name}: hooks")
    return found


class Checkpointed(nn.Module):
    """A reentrant activation checkpoint and a Linear weight passed to F.linear by its parent."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = checkpoint.checkpoint(self.inner, x, use_reentrant=True)
        return self.head(F.linear(x, self.proj.weight, self.proj.bias))


class Failing(Checkpointed):
    """Fails inside its forward, after the families' patches have been made."""

    def forward(self, x):
        super().forward(x)
        raise RuntimeError("this model fails on purpose")


def _models():
    return [
        ("NanoGPT", NanoGPT(vocab_size=50, block_size=16, n_layer=1, n_head=4, n_embd=32), torch.randint(0, 50, (2, 8))),
        ("TransformerModel", TransformerModel(ntoken=40, ninp=16, nhead=2, nhid=32, nlayers=1),
         torch.randint(0, 40, (6, 2))),
        ("RNNClassifier", RNNClassifier("LSTM", ntoken=30, ninp=8, nhid=12, nlayers=1), torch.randint(0, 30, (2, 5))),
        ("Checkpointed", Checkpointed(), torch.randn(2, 8)),
    ]


@pytest.mark.parametrize("name", [n for n, _, _ in _models()])
def test_a_trace_undoes_every_patch(name):
    _, model, x = next(m for m in _models() if m[0] == name)
    before, buffers = _globals(), sorted(n for n, _ in model.named_buffers())
    traced = graph.trace(model.eval(), x)
    assert traced.groups  # the trace ran
    assert _globals() == before
    assert _leftovers(model) == []
    assert sorted(n for n, _ in model.named_buffers()) == buffers  # position tables are buffers again


def test_a_failing_trace_undoes_every_patch_too():
    model, before = Failing().eval(), _globals()
    with pytest.raises(Exception, match="fails on purpose"):
        graph.trace(model, torch.randn(2, 8))
    assert _globals() == before
    assert _leftovers(model) == []


class HeadCountAttention(nn.Module):
    """qkv reshaped by the head count, the head size inferred (``-1``): it runs with a head fewer."""

    def __init__(self, dim: int = 32, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1)
        return self.head(x + self.proj(y))


def test_what_one_trace_noted_is_not_seen_by_the_next_call():
    """The attention probe's verdict lives in the trace, so `find_blocks` answers the same before
    and after a trace has run (it used to remember the probed blocks process-wide)."""
    model, x = HeadCountAttention().eval(), torch.randn(2, 5, 32)
    assert attention.find_blocks(model) == []  # by its layout, it is cut by head dims with its input
    traced = graph.trace(model, x)
    assert attention.find_blocks(model) == []
    # the trace itself keeps what its probe saw: the block runs with a head fewer, so heads are cut
    assert [b.name for b in traced.blocks] == [""] and traced.tied == []
    assert graph.trace(model, x).blocks[0].module is model  # a second trace probes it again
