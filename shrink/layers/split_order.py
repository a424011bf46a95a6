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

That position is only right when every part has exactly one consumer: CSPNet's ``x1, x2 =
x.split(n, 1)`` feeds x1 to a conv *and* a residual add, three consumers for two parts. And a
concatenation of split parts (``torch.cat((i, conv(c)))``) is counted from the split's *input*
width, so a reshape after it (a channels-last Linear on [B, H, W, C] flattens to [B*H*W, C]) is
taken for a flatten and maps channels i to i // 2. While tracing, every part a split returns
passes through a copy (one element-wise node, same values): each part has one consumer, its
copy, and the tracer counts a copy's width from its part. Parts of ``split(n)`` and ``chunk``
get their exact sizes from autograd (`_init_shapes`) rather than torch-pruning's guess.

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


_SPLIT_FNS = ("SplitBackward", "SplitWithSizesBackward")


def _is_part(t) -> bool:
    fn = getattr(t, "grad_fn", None)
    return isinstance(t, torch.Tensor) and fn is not None and fn.name().startswith(_SPLIT_FNS)


class _CopyParts(TorchFunctionMode):
    """Every part a split returns is copied once (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, (tuple, list)) and out and all(_is_part(t) for t in out):
            return type(out)(t.clone() for t in out) if isinstance(out, tuple) else [t.clone() for t in out]
        return out


_ANY_DIM = 100  # torch-pruning's bound: a saved dim above it is a negative dim stored unsigned


def _channel_split(node: _Node) -> bool:
    """A split over the last dimension of a [B, N, C] activation (``dim=-1``): channels, not tokens.

    Also any concatenation over the last dimension: torchvision's Swin merges patches with
    ``cat([x0, x1, x2, x3], -1)`` on [B, H, W, C] maps, and Swin V2's per-head ``logit_scale``
    [heads, 1, 1] made torch-pruning take it for the ViT class-token concatenation (a 3-d parameter
    upstream) and turn its mapping off: the cut then removed a quarter of the indices it should.
    """
    fn = node.grad_fn
    sizes = getattr(fn, "_saved_self_sym_sizes", None)
    dim = getattr(fn, "_saved_dim", None)
    if dim is None or dim < _ANY_DIM or (dim - (1 << 64)) != -1:
        return False
    if node.type == tp.ops.OPTYPE.CONCAT:
        return True
    return node.type == tp.ops.OPTYPE.SPLIT and sizes is not None and len(sizes) == 3


class _Mapping:
    """``Node.enable_index_mapping`` while tracing: cannot be turned off for a channel split or concatenation."""

    def __get__(self, node, owner=None):
        return self if node is None else node.__dict__.get("enable_index_mapping", True)

    def __set__(self, node, value) -> None:
        node.__dict__["enable_index_mapping"] = True if (not value and _channel_split(node)) else value


_shape_infer = tp.dependency.shape_infer
_INIT_SHAPES = _shape_infer.init_shape_information


def _init_shapes(graph) -> None:
    """torch-pruning's shape set-up, then exact part sizes for ``split(n)``/``chunk`` splits.

    Their autograd node (SplitBackward0) keeps the part size and the input's sizes under names
    newer than torch-pruning looks for, so it guesses each part's width from its consumer, and
    guesses 0 for a part that goes into a concatenation (CSPNet).
    """
    _INIT_SHAPES(graph)
    for node in graph.module2node.values():
        fn = node.grad_fn
        if node.type != tp.ops.OPTYPE.SPLIT or fn is None or not fn.name().startswith("SplitBackward"):
            continue
        size, dims, dim = (getattr(fn, n, None) for n in ("_saved_split_size", "_saved_self_sym_sizes", "_saved_dim"))
        if not isinstance(size, int) or dims is None or dim is None or size <= 0:
            continue
        if dim != 1 and dim < _ANY_DIM:  # torch-pruning maps channel splits only (dim 1, or -1 stored unsigned)
            continue
        if dim >= _ANY_DIM and len(dims) > 3:  # the last dim of [B, heads, N, d] (EfficientViT's q, k, v): not channels
            continue
        total = int(dims[dim if dim < _ANY_DIM else len(dims) - 1])
        sizes = [size] * (total // size) + ([total % size] if total % size else [])
        if len(sizes) != len(node.outputs):
            continue  # a part without a consumer: positions and parts do not line up
        node.module.split_sizes = sizes
        node.module.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]


class Ordered:
    """While the graph is traced: split nodes list their consumers in the order of the parts."""

    def __init__(self, model: nn.Module) -> None:
        # A black box retraced inside another trace finds the patch made: the outer trace undoes it.
        self._patched = _Node.add_output is _ORIGINAL
        if self._patched:
            _Node.add_output = _add_output_in_order
            _Node.enable_index_mapping = _Mapping()
            _shape_infer.init_shape_information = _init_shapes
        self._mode = _CopyParts()
        self._mode.__enter__()
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._mode.__exit__(None, None, None)
            if self._patched:
                _Node.add_output = _ORIGINAL
                del _Node.enable_index_mapping  # instances keep the values set while tracing
                _shape_infer.init_shape_information = _INIT_SHAPES


_ORIGINAL = _Node.add_output
