"""Selective kernel convolutions (SKNet, timm's ``SelectiveKernel``): split-attention over paths.

What the family looks like: ``paths`` (a ModuleList of conv-norm-act, one per kernel size), each
writing the module's C output channels; ``split_input`` splits the input between them with a size
read from an attribute, ``torch.split(x, self.in_channels // self.num_paths, 1)``. The paths'
outputs are stacked [B, P, C, H, W]; ``attn`` sums them, reduces (``fc_reduce``: C -> r) and
selects (``fc_select``: r -> P*C, viewed as [B, P, C, 1, 1] and soft-maxed over paths); the output
is the attention-weighted sum over paths.

So output channel c is one unit: row c of every path's conv, column c of ``fc_reduce``, and rows
``p*C + c`` of ``fc_select``. The tracer cannot follow the stack and the view into paths, and
keeps everything whole. While the graph is traced (`Paths`), each module runs a stand-in with the
same couplings in operations the tracer knows: the paths are added, and ``fc_select``'s output is
split into P parts of C, each multiplying one path (torch-pruning then ties row p*C + c to c; the
engine counts them as one unit, cut/units.py). With ``split_input`` the split size is one int, so
every part of the input must keep as many channels: the stand-in ties channel j of each part. The stand-in's values are not the module's; only
its graph is used. After the cut, `finish` sets the attributes the forward reads from the new
layer sizes (``in_channels``, ``out_channels``).
"""

from __future__ import annotations

import torch
from torch import nn


def _parts(module: nn.Module):
    """(paths, attn) of a selective kernel module, or None."""
    paths, attn = getattr(module, "paths", None), getattr(module, "attn", None)
    if not isinstance(paths, nn.ModuleList) or len(paths) < 2 or not isinstance(getattr(module, "num_paths", None), int):
        return None
    if not all(isinstance(getattr(attn, n, None), nn.Conv2d) for n in ("fc_reduce", "fc_select")):
        return None
    return paths, attn


def _first_conv(path: nn.Module) -> nn.Conv2d | None:
    return next((m for m in path.modules() if isinstance(m, nn.Conv2d)), None)


class _StandIn:
    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x):
        module = self.module
        paths, attn = _parts(module)
        if module.split_input:
            x_split = torch.split(x, module.in_channels // module.num_paths, 1)
            # The split size is one int: every part must keep as many channels. Channel j of each
            # part is tied to channel j of the others (their sum), and every path reads channel j
            # (each part read once: the tracer maps a split's k-th consumer to its k-th part).
            tie = x_split[0]
            for other in x_split[1:]:
                tie = tie + other
            x_paths = [op(tie) for op in paths]
        else:
            x_paths = [op(x) for op in paths]
        total = x_paths[0]
        for other in x_paths[1:]:
            total = total + other  # the paths' channel c is one channel
        a = attn.act(attn.bn(attn.fc_reduce(total.mean((2, 3), keepdim=True))))
        select = attn.fc_select(a).split(total.shape[1], 1)  # part p weighs path p: row p*C + c goes with c
        out = x_paths[0] * select[0]
        for path, weight in zip(x_paths[1:], select[1:]):
            out = out + path * weight
        return out


class Paths:
    """While the graph is traced: each selective kernel module runs its stand-in (see the docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self._modules = [m for m in model.modules() if _parts(m) is not None and hasattr(m, "split_input")]
        for m in self._modules:
            m.forward = _StandIn(m)

    def close(self) -> None:
        for m in self._modules:
            m.__dict__.pop("forward", None)


def finish(model: nn.Module, seen: object = None) -> None:
    """Set each selective kernel module's ``in_channels``/``out_channels`` from its cut paths."""
    for module in model.modules():
        parts = _parts(module)
        if parts is None:
            continue
        convs = [_first_conv(p) for p in parts[0]]
        if any(c is None for c in convs):
            continue
        if isinstance(getattr(module, "in_channels", None), int):
            per = convs[0].in_channels
            module.in_channels = per * module.num_paths if getattr(module, "split_input", False) else per
        if isinstance(getattr(module, "out_channels", None), int):
            module.out_channels = convs[0].out_channels
