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

How to cut: not at all: `op_reason` notes those operations while the graph is traced, and a
group that passes through one is kept whole with the reason. Position tables held as buffers are
the exception with a known layout: positional.py turns them into parameters for tracing, so they
carry a gradient, are not constants here, and are cut with the embedding.
"""

from __future__ import annotations

import torch

REASON = "combined with a fixed-width constant (a tensor made in forward, or a buffer)"
VIEW_REASON = "reshaped to a width written in the code (view(-1, N))"
_VIEWS = {torch.Tensor.view, torch.Tensor.reshape, torch.reshape}
_OPS = {torch.add, torch.sub, torch.mul, torch.div, torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul,
        torch.Tensor.div, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__sub__,
        torch.Tensor.__rsub__, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__truediv__}


def op_reason(func, args: tuple, kwargs: dict, out: torch.Tensor) -> str | None:
    """The reason to keep a group whole if this call fixes a width with a constant."""
    if func in _OPS and len(args) >= 2 and out.dim() >= 2:
        a, b = args[0], args[1]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            const = b if a.requires_grad and not b.requires_grad else a if b.requires_grad and not a.requires_grad else None
            width = out.shape[-1]
            if const is not None and const.is_floating_point() and const.dim() >= 1 and width > 1 \
                    and const.shape[-1] == width:
                return REASON
    if func in _VIEWS and out.dim() == 2 and len(args) > 1:  # a flatten to [batch, width]
        shape = tuple(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        x = args[0]
        if shape and shape[0] == -1 and isinstance(x, torch.Tensor) and x.dim() > 2 and out.shape[0] == x.shape[0]:
            return VIEW_REASON
    return None
