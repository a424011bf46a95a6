"""The one place where layer families are registered; the engine asks it, never a family by name.

A family is one small file in this folder that says what its layers look like and how to cut
them. It registers the hooks it needs (all optional):

- ``pruners(model) -> {module type: torch-pruning handler}``: how to cut a module type the
  engine cannot cut by itself (Hugging Face Conv1D, LSTM/GRU).
- ``watch(model) -> object with .close()``: forward hooks active while the graph is traced.
- ``fixed(watched, outputs) -> {module: reason}``: modules whose output width the caller sees
  (a recurrent state passed in), so their groups are kept whole with that reason.
- ``op_reason(func, args, kwargs, out) -> reason | None``: called for every torch function
  while the graph is traced (one TorchFunctionMode for all families); an operation with a reason
  keeps every group through it whole (a pad that adds channels, a channel shuffle).
- ``owns(model) -> [layers]``: layers whose output rows the family cuts itself, so they never
  root a torch-pruning width group (the fused qkv of attention tied to its input width).
- ``finish(model)``: after the cuts, set the attributes a family's forward reads (a ViT's
  ``hidden_dim``, nanoGPT's ``n_embd``) from the new layer sizes.
- ``cut_heads(module, kept)``: when an attention block loses heads, cut what else holds one
  entry per head (T5's and Swin's relative position bias tables); ``kept``: the heads kept.
- ``shared_heads(name, module) -> key | None``: attention blocks with one key must keep the
  same heads (T5 adds its first layer's position bias in every layer of the stack).
- ``parts(module) -> int``: a layer whose outputs the forward splits into this many equal parts
  by a stored size (CSPNet's expanded width): its groups remove the same positions in each part.

Attention blocks cut by whole heads are found by `attention.find_blocks`, also from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import (checkpointing, constants, csp, embed_scale, eva, functional_linear, glu, norm_shape, padding,
               position_bias, positional, recurrent, rows, selective_kernel, shuffle, split_order, tied_attention, vit)
from . import hf_embed_scale


@dataclass(frozen=True)
class Family:
    """What one family file contributes (see the module docstring).

    Attributes:
        name: the family, for logs.
        pruners, watch, fixed, owns, op_reason, finish, cut_heads, shared_heads, parts: its hooks, or None.
    """

    name: str
    pruners: Callable[[nn.Module], dict] | None = None
    watch: Callable[[nn.Module], object] | None = None
    fixed: Callable[[object, list[torch.Tensor]], dict] | None = None
    owns: Callable[[nn.Module], list] | None = None
    op_reason: Callable[..., str | None] | None = None
    finish: Callable[[nn.Module], None] | None = None
    cut_heads: Callable[[nn.Module, list[int]], None] | None = None
    shared_heads: Callable[[str, nn.Module], str | None] | None = None
    parts: Callable[[nn.Module], int] | None = None


FAMILIES: tuple[Family, ...] = (
    Family("Hugging Face Conv1D", pruners=rows.pruners),
    Family("Linear weights passed to F.linear by the parent (torchvision's Swin)", watch=functional_linear.Routed),
    Family("recurrent (LSTM, GRU, RNN)", pruners=recurrent.pruners, watch=recurrent.StateWatch,
           fixed=recurrent.fixed_state),
    Family("attention reshaped to its input width (timm, nanoGPT, Swin, Twins)", watch=tied_attention.Probe,
           owns=tied_attention.own_layers),
    Family("vision transformer (torchvision)", finish=vit.finish),
    Family("position tables held as buffers", watch=positional.Promote, finish=positional.finish),
    Family("zero-padded channel shortcuts", op_reason=padding.op_reason),
    Family("channel shuffle", op_reason=shuffle.op_reason),
    Family("widths fixed by a constant", op_reason=constants.op_reason, watch=constants.Shaped),
    Family("relative position bias per head (T5, Swin)", cut_heads=position_bias.cut_heads,
           shared_heads=position_bias.shared_key),
    Family("gated widths (GLU, gMLP, MambaOut)", watch=glu.Tokens, finish=glu.finish),
    Family("splits into parts of different sizes", watch=split_order.Ordered),
    Family("selective kernel (SKNet)", watch=selective_kernel.Paths, finish=selective_kernel.finish),
    Family("EVA attention (rotary table per head dim, q/v biases, reshaped to its input width)", watch=eva.Traced,
           cut_heads=eva.cut_heads, finish=eva.finish),
    Family("cross stage split in equal halves by a stored size (CSPNet)", watch=csp.Halves, parts=csp.parts,
           finish=csp.finish),
    Family("activation checkpointing (torch.utils.checkpoint, reentrant)", watch=checkpointing.Inline),
    Family("hand-written norms storing their width (ConvNeXt's LayerNorm)", finish=norm_shape.finish),
    Family("token embeddings scaled by sqrt(hidden) (Gemma)", finish=embed_scale.finish),
    Family("token embeddings scaled by a float sqrt(hidden) (BioGPT, XGLM)", finish=hf_embed_scale.finish),
)


def pruners(model: nn.Module) -> dict:
    """Every registered family's torch-pruning handlers for the module types in ``model``."""
    found: dict = {}
    for family in FAMILIES:
        if family.pruners is not None:
            found.update(family.pruners(model))
    return found


@contextmanager
def watching(model: nn.Module, fixed: dict) -> Iterator[None]:
    """Run the families' hooks over the traced forward; ``fixed`` receives the outputs' callback.

    Use: ``with watching(model, kept) as done: ...trace...; done(outputs)`` fills ``kept`` with
    {module or autograd node: reason} for what keeps its group whole.
    """
    active = [(f, f.watch(model)) for f in FAMILIES if f.watch is not None]
    ops = _OpWatch([f.op_reason for f in FAMILIES if f.op_reason is not None])
    ops.__enter__()

    def done(outputs: list[torch.Tensor]) -> None:
        for family, watched in active:
            if family.fixed is not None:
                fixed.update(family.fixed(watched, outputs))
        fixed.update(ops.nodes)

    try:
        yield done
    finally:
        ops.__exit__(None, None, None)
        for _, watched in active:
            watched.close()


class _OpWatch(TorchFunctionMode):
    """Every torch function called while the graph is traced, shown to the families' ``op_reason``."""

    def __init__(self, checks: list) -> None:
        super().__init__()
        self.checks = checks
        self.nodes: dict = {}  # autograd node -> reason its groups stay whole

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.grad_fn is not None and args:
            for check in self.checks:
                reason = check(func, args, kwargs, out)
                if reason:
                    self.nodes[out.grad_fn] = reason
                    break
        return out


def owned(model: nn.Module) -> list[nn.Module]:
    """Layers the families cut themselves (never roots of a torch-pruning group)."""
    return [layer for f in FAMILIES if f.owns is not None for layer in f.owns(model)]


def finish(model: nn.Module) -> None:
    """After cutting: every family sets the attributes its forward reads from the new sizes."""
    for family in FAMILIES:
        if family.finish is not None:
            family.finish(model)


def cut_heads(module: nn.Module, kept: list[int]) -> None:
    """An attention block keeps heads ``kept``: every family cuts its per-head state to match."""
    for family in FAMILIES:
        if family.cut_heads is not None:
            family.cut_heads(module, kept)


def shared_heads(name: str, module: nn.Module) -> str:
    """The key of the blocks that must keep the same heads as this one ("" when none)."""
    for family in FAMILIES:
        key = family.shared_heads(name, module) if family.shared_heads is not None else None
        if key:
            return key
    return ""


def parts(module: nn.Module) -> int:
    """Equal parts the forward splits ``module``'s outputs into by a stored size (1: none)."""
    found = 1
    for family in FAMILIES:
        if family.parts is not None:
            found = max(found, family.parts(module))
    return found
