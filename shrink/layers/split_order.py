"""Splits into parts of different sizes: the tracer must list each part's consumer in the split's order.

What the family looks like: ``g, i, c = torch.split(x, (32, 20, 12), dim=-1)`` (MambaOut) and any
``split``/``chunk``/``unbind`` whose parts are read in another order than they were written:
``fc2(act(g) * torch.cat((i, conv(c)), -1))`` reaches the concatenation (parts i and c) before g.

torch-pruning maps part k of a split to channels ``offsets[k]:offsets[k+1]`` of its input, with
k the position of the consumer in the split node's ``outputs`` list; but it fills that list in the
order it *discovers* consumers while walking the graph backwards from the model's outputs, not
in the order of the parts. Parts of equal size (``chunk(2)`` of a GLU) come out right by luck;
MambaOut's (32, 20, 12) couples the concatenation with g's channels and cuts nonsense.

How to fix: while the graph is traced (`Ordered`), a split node keeps its consumers sorted by
the part they read: autograd records it, as the output number next to the split in each
consumer's ``next_functions``.

The same pattern meets a second slip: torch-pruning counts the width of a concatenation of
split parts (``torch.cat((i, conv(c)))``) from the split's *input*, so a reshape after it (a
channels-last Linear on [B, H, W, C] flattens to [B*H*W, C]) is taken for a flatten and maps
channels i to i // 2. While tracing, each split part entering a concatenation passes through a
copy (one element-wise node, same values), through which the tracer counts the part's own size.

And a third, in vision transformers: torch-pruning turns off the index mapping of every split
downstream of a 3-D parameter (a class token or position table [1, N, D]), a guard meant for
splits over *tokens*. It also hits the GLU MLP of every block (EVA-02's ``fc1(x).chunk(2, dim=-1)``
over [B, N, C]), whose halves are then taken for the same channels. While tracing, a split over
the last dimension of a [B, N, C] activation keeps its mapping (`_Mapping`).
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode

_Node = tp.dependency.node.Node
_SPLITS = (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND)


def _part(split: _Node, consumer: _Node) -> int:
    """The output number of ``split`` that ``consumer`` reads (the lowest, if it reads several)."""
    fn = getattr(consumer, "grad_fn", None)
    parts = [nr for f, nr in getattr(fn, "next_functions", ()) if f is not None and f is split.grad_fn]
    return min(parts) if parts else 1 << 30


def _add_output_in_order(self: _Node, node: _Node) -> None:
    self.outputs.append(node)
    if self.type in _SPLITS and self.grad_fn is not None and len(self.outputs) > 1:
        self.outputs.sort(key=lambda n: _part(self, n))  # stable: a consumer of two parts stays put


_CATS = {torch.cat, torch.concat, torch.concatenate}
_SPLIT_FNS = ("SplitBackward", "SplitWithSizesBackward", "UnbindBackward")


def _is_part(t) -> bool:
    fn = getattr(t, "grad_fn", None)
    return isinstance(t, torch.Tensor) and fn is not None and fn.name().startswith(_SPLIT_FNS)


class _CopyParts(TorchFunctionMode):
    """A split part entering a concatenation is copied first (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CATS and args and isinstance(args[0], (list, tuple)) and any(_is_part(t) for t in args[0]):
            args = ([t.clone() if _is_part(t) else t for t in args[0]], *args[1:])
        return func(*args, **kwargs)


_ANY_DIM = 100  # torch-pruning's bound: a saved dim above it is a negative dim stored unsigned


def _channel_split(node: _Node) -> bool:
    """A split over the last dimension of a [B, N, C] activation (``dim=-1``): channels, not tokens."""
    fn = node.grad_fn
    sizes = getattr(fn, "_saved_self_sym_sizes", None)
    dim = getattr(fn, "_saved_dim", None)
    if node.type != tp.ops.OPTYPE.SPLIT or sizes is None or dim is None or len(sizes) != 3:
        return False
    return dim >= _ANY_DIM and (dim - (1 << 64)) == -1


class _Mapping:
    """``Node.enable_index_mapping`` while tracing: cannot be turned off for a channel split."""

    def __get__(self, node, owner=None):
        return self if node is None else node.__dict__.get("enable_index_mapping", True)

    def __set__(self, node, value) -> None:
        node.__dict__["enable_index_mapping"] = True if (not value and _channel_split(node)) else value


class Ordered:
    """While the graph is traced: split nodes list their consumers in the order of the parts."""

    _depth = 0  # nested traces (a black box retraced inside another) share one patch

    def __init__(self, model: nn.Module) -> None:
        if Ordered._depth == 0:
            _Node.add_output = _add_output_in_order
            _Node.enable_index_mapping = _Mapping()
        Ordered._depth += 1
        self._mode = _CopyParts()
        self._mode.__enter__()
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._mode.__exit__(None, None, None)
            Ordered._depth -= 1
            if Ordered._depth == 0:
                _Node.add_output = _ORIGINAL
                del _Node.enable_index_mapping  # instances keep the values set while tracing


_ORIGINAL = _Node.add_output
