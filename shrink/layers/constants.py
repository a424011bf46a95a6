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

How to cut: not at all: `Shaped` notes those operations while the graph is traced, and a
group that passes through one is kept whole with the reason. Position tables held as buffers are
the exception with a known layout: positional.py turns them into parameters for tracing, so they
carry a gradient, are not constants here, and are cut with the embedding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

REASON = "combined with a fixed-width constant (a tensor made in forward, or a buffer)"
VIEW_REASON = "reshaped to a width written in the code (view(-1, N))"
_VIEWS = frozenset({torch.Tensor.view, torch.Tensor.reshape, torch.reshape})
_OPS = frozenset({torch.add, torch.sub, torch.mul, torch.div, torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul,
        torch.Tensor.div, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__sub__,
        torch.Tensor.__rsub__, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__truediv__})
_LIKES = frozenset({torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like,
                    torch.randn_like})


class Shaped(TorchFunctionMode):
    """While the graph is traced: the operations that fix a width with a constant, by autograd node.

    A tensor made in the shape of one that carries a gradient (``zeros_like(x)``: DETR's object
    queries) follows the cut, so it is no constant.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._shaped: dict[int, torch.Tensor] = {}  # by id (a tensor's == compares values), held while open
        self.nodes: dict = {}  # autograd node -> reason
        self.__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            return out
        if func in _LIKES and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            self._shaped[id(out)] = out
        elif out.grad_fn is not None and args:
            reason = op_reason(func, args, kwargs, out, self._shaped)
            if reason:
                self.nodes.setdefault(out.grad_fn, reason)
        return out

    def fixed(self, outputs: list[torch.Tensor]) -> dict:
        return dict(self.nodes)

    def close(self) -> None:
        self.__exit__(None, None, None)
        self._shaped.clear()


def op_reason(func, args: tuple, kwargs: dict, out: torch.Tensor, shaped: dict) -> str | None:
    """The reason to keep a group whole if this call fixes a width with a constant (``shaped``: the
    tensors made in a traced tensor's shape, by id)."""
    if func in _OPS and len(args) >= 2 and out.dim() >= 2:
        a, b = args[0], args[1]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            const = b if a.requires_grad and not b.requires_grad else a if b.requires_grad and not a.requires_grad else None
            width = out.shape[-1]
            if const is not None and const.is_floating_point() and const.dim() >= 1 and width > 1 \
                    and const.shape[-1] == width and shaped.get(id(const)) is not const:
                return REASON
    if func in _VIEWS and out.dim() == 2 and len(args) > 1:  # a flatten to [batch, width]
        shape = tuple(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        x = args[0]
        if shape and shape[0] == -1 and isinstance(x, torch.Tensor) and x.dim() > 2 and out.shape[0] == x.shape[0]:
            return VIEW_REASON
    return None
