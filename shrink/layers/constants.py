"""Widths fixed by a constant: a tensor the graph cannot cut, or a width written into the code.

What the family looks like: PointNet's ``x = x + torch.eye(3).view(1, 9).repeat(b, 1)`` after a
9-wide Linear, or ``x * self.mask`` with a buffer: an element-wise op between an activation and a
tensor that carries no gradient (made inside forward, or a buffer), whose last dimension has the
activation's full width. Autograd records no edge for such a tensor, so the traced graph would
cut the activation and leave the constant at its old width.

The second form is a reshape with the width written in: PointNet's ``x.view(-1, 1024)`` after
its max-pool, LeNet's ``x.view(-1, 16 * 5 * 5)``. The batch is the inferred dimension (-1 first)
and the output keeps the input's batch, so every other size is a number from the code.

How to cut: not at all: `ConstantWatch` notes those operations while the graph is traced, and a
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
_VIEWS = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape}
_OPS = {torch.add, torch.sub, torch.mul, torch.div, torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul,
        torch.Tensor.div, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__sub__,
        torch.Tensor.__rsub__, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__truediv__}


class ConstantWatch(TorchFunctionMode):
    """While the graph is traced: element-wise ops between an activation and a full-width constant."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.nodes: dict = {}
        self.__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _OPS and len(args) >= 2 and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            a, b = args[0], args[1]
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and out.dim() >= 2:
                const = b if a.requires_grad and not b.requires_grad else a if b.requires_grad and not a.requires_grad else None
                width = out.shape[-1]
                if const is not None and const.is_floating_point() and const.dim() >= 1 and width > 1 \
                        and const.shape[-1] == width:
                    self.nodes[out.grad_fn] = REASON
        if func in _VIEWS and isinstance(out, torch.Tensor) and out.grad_fn is not None and out.dim() >= 2:
            shape = args[1:] if len(args) > 2 or not isinstance(args[1] if len(args) > 1 else None, (tuple, list)) \
                else tuple(args[1])
            x = args[0]
            if shape and shape[0] == -1 and isinstance(x, torch.Tensor) and x.dim() >= 2 and out.shape[0] == x.shape[0]:
                self.nodes[out.grad_fn] = VIEW_REASON
        return out

    def close(self) -> None:
        self.__exit__(None, None, None)


def node_reasons(watch: ConstantWatch) -> dict:
    return dict(watch.nodes)
