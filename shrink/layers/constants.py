"""Widths fixed by a constant: a tensor the graph cannot cut, or a width written into the code.

What the family looks like: PointNet's ``x = x + torch.eye(3).view(1, 9).repeat(b, 1)`` after a
9-wide Linear, or ``x * self.mask`` with a buffer: an element-wise op between an activation and a
tensor that carries no gradient (made inside forward, or a buffer), whose last dimension has the
activation's full width. Autograd records no edge for such a tensor, so the traced graph would
cut the activation and leave the constant at its old width.

The second form is a reshape with the width written in: PointNet's ``x.view(-1, 1024)`` after
its max-pool, LeNet's ``x.view(-1, 16 * 5 * 5)``. A flatten to [batch, width] whose batch is the inferred
dimension (-1 first, the output keeping the input's batch) has its width written in the code.
(Swin's ``windows.view(-1, ws * ws, C)`` reads C from the input: not a flatten, not flagged.)

A tensor made in the shape of a traced one is no such constant: DETR's decoder starts from
``tgt = torch.zeros_like(query_embed)`` and adds each layer's attention output to it; the zeros
take the queries' width at run time, so they follow any cut of it (`Shaped` notes them while the
graph is traced).

How to cut: not at all: `op_reason` notes those operations while the graph is traced, and a
group that passes through one is kept whole with the reason. Position tables held as buffers are
the exception with a known layout: positional.py turns them into parameters for tracing, so they
carry a gradient, are not constants here, and are cut with the embedding.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

REASON = "combined with a fixed-width constant (a tensor made in forward, or a buffer)"
VIEW_REASON = "reshaped to a width written in the code (view(-1, N))"
_VIEWS = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape}
_OPS = {torch.add, torch.sub, torch.mul, torch.div, torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul,
        torch.Tensor.div, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__sub__,
        torch.Tensor.__rsub__, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__truediv__}


_LIKES = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like, torch.randn_like}
# Tensors made in the shape of a traced tensor while tracing, by id (a tensor's == compares values).
_SHAPED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


class Shaped(TorchFunctionMode):
    """While the graph is traced: note the tensors made in the shape of one that carries a gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _LIKES and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad \
                and isinstance(out, torch.Tensor):
            _SHAPED[id(out)] = out
        return out

    def close(self) -> None:
        self.__exit__(None, None, None)
        _SHAPED.clear()


def op_reason(func, args: tuple, kwargs: dict, out: torch.Tensor) -> str | None:
    """The reason to keep a group whole if this call fixes a width with a constant."""
    if func in _OPS and len(args) >= 2 and out.dim() >= 2:
        a, b = args[0], args[1]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            const = b if a.requires_grad and not b.requires_grad else a if b.requires_grad and not a.requires_grad else None
            width = out.shape[-1]
            if const is not None and const.is_floating_point() and const.dim() >= 1 and width > 1 \
                    and const.shape[-1] == width and _SHAPED.get(id(const)) is not const:
                return REASON
    if func in _VIEWS and out.dim() == 2 and len(args) > 1:  # a flatten to [batch, width]
        shape = tuple(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        x = args[0]
        if shape and shape[0] == -1 and isinstance(x, torch.Tensor) and x.dim() > 2 and out.shape[0] == x.shape[0]:
            return VIEW_REASON
    return None
