"""The one place where layer families are registered; the engine asks it, never a family by name.

A family is one small file in this folder that says what its layers look like and how to cut
them. It registers the hooks it needs (all optional):

- ``pruners(model) -> {module type: torch-pruning handler}``: how to cut a module type the
  engine cannot cut by itself (Hugging Face Conv1D, LSTM/GRU).
- ``trace(model) -> object with .close()``: made when one trace of ``model`` starts and closed
  when its forward has run; it holds everything the family notes about that trace (nothing is
  kept in the family's module). It may also answer, after the forward:
  ``fixed(outputs) -> {module or autograd node: reason}`` (widths the caller sees: a recurrent
  state passed in, a constant the forward adds), ``owns() -> [layers]`` (layers whose output rows
  the family cuts itself, so they never root a torch-pruning width group: the fused qkv of
  attention tied to its input width) and ``parts(module) -> int`` (a layer whose outputs the
  forward splits into this many equal parts by a stored size: CSPNet's expanded width).
- ``op_reason(func, args, kwargs, out) -> reason | None``: called for every torch function
  while the graph is traced (one TorchFunctionMode for all families); an operation with a reason
  keeps every group through it whole (a pad that adds channels, a channel shuffle).
- ``finish(model, seen)``: after the cuts, set the attributes a family's forward reads (a ViT's
  ``hidden_dim``, nanoGPT's ``n_embd``) from the new layer sizes; ``seen`` is the family's trace
  object of the trace the cut was planned on (None where there was none or it has no ``trace``).
- ``extra_rows(module, width) -> [tensor names]``: a layer's own tensors besides weight and bias
  with one entry per output channel (NFNet's ``gain``); the engine narrows them with the outputs.
- ``inexact(module) -> bool``: a layer whose output is not affine in its weight (weight
  standardisation), so a cut of its inputs is checked for running and shapes only.
- ``plain_weights(modules)``: a context manager under which computed weights (weight norm) are
  plain tensors while the engine cuts them, put back after.
- ``cut_heads(module, kept)``: when an attention block loses heads, cut what else holds one
  entry per head (T5's and Swin's relative position bias tables); ``kept``: the heads kept.
- ``shared_heads(name, module) -> key | None``: attention blocks with one key must keep the
  same heads (T5 adds its first layer's position bias in every layer of the stack).

Attention blocks cut by whole heads are found by `attention.find_blocks`, also from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import (channels_to_tokens, checkpointing, constants, csp, embed_scale, eva, functional_linear, glu, inplace_views, input_width_heads, norm_shape,
               norms, padding, parametrized, position_bias, positional, recurrent, resample, rows, selective_kernel,
               shuffle, split_order, std_conv, tied_attention, unsaved_tables, vit)


@dataclass(frozen=True)
class Family:
    """What one family file contributes (see the module docstring).

    Attributes:
        name: the family, for logs.
        pruners, trace, op_reason, finish, cut_heads, shared_heads, extra_rows, inexact, plain_weights:
            its hooks, or None.
    """

    name: str
    pruners: Callable[[nn.Module], dict] | None = None
    trace: Callable[[nn.Module], object] | None = None
    op_reason: Callable[..., str | None] | None = None
    finish: Callable[[nn.Module, object | None], None] | None = None
    cut_heads: Callable[[nn.Module, list[int]], None] | None = None
    shared_heads: Callable[[str, nn.Module], str | None] | None = None
    extra_rows: Callable[[nn.Module, int], list[str]] | None = None
    inexact: Callable[[nn.Module], bool] | None = None
    plain_weights: Callable | None = None


FAMILIES: tuple[Family, ...] = (
    Family("Hugging Face Conv1D", pruners=rows.pruners),
    Family("Linear weights passed to F.linear by the parent (torchvision's Swin)", trace=functional_linear.Routed),
    Family("recurrent (LSTM, GRU, RNN)", pruners=recurrent.pruners, trace=recurrent.StateWatch),
    Family("attention reshaped to its input width (timm, nanoGPT, Swin, Twins)", trace=tied_attention.Probe),
    Family("Hugging Face attention reshaped to its input width (FSMT, LED, PVT v2)", trace=input_width_heads.Probe),
    Family("vision transformer (torchvision)", finish=vit.finish),
    Family("position tables held as buffers", trace=positional.Promote, finish=positional.finish),
    Family("zero-padded channel shortcuts", op_reason=padding.op_reason),
    Family("channel shuffle", op_reason=shuffle.op_reason),
    Family("widths fixed by a constant", trace=constants.Shaped),
    Family("tables a Hugging Face class rebuilds on load instead of saving (Marian's sinusoid)",
           trace=unsaved_tables.Unsaved),
    Family("relative position bias per head (T5, Swin)", cut_heads=position_bias.cut_heads,
           shared_heads=position_bias.shared_key),
    Family("gated widths (GLU, gMLP, MambaOut)", trace=glu.Tokens, finish=glu.finish),
    Family("splits into parts of different sizes", trace=split_order.Ordered),
    Family("in-place arithmetic on a layer's output that is a view (Longformer's scaled queries)",
           trace=inplace_views.OutOfPlace),
    Family("channels folded into tokens (SEW's upsampling)", trace=channels_to_tokens.Folded),
    Family("selective kernel (SKNet)", trace=selective_kernel.Paths, finish=selective_kernel.finish),
    Family("EVA attention (rotary table per head dim, q/v biases, reshaped to its input width)", trace=eva.Traced,
           cut_heads=eva.cut_heads, finish=eva.finish),
    Family("cross stage split in equal halves by a stored size (CSPNet)", trace=csp.Halves, finish=csp.finish),
    Family("activation checkpointing (torch.utils.checkpoint, reentrant)", trace=checkpointing.Inline),
    Family("hand-written norms storing their width (ConvNeXt's LayerNorm)", finish=norm_shape.finish),
    Family("scales rebuilt from the config: embeddings by sqrt(hidden) (Gemma, BioGPT), T5's tied head",
           finish=embed_scale.finish),
    Family("norms without affine weights, or before an in-place activation (MONAI's ADN)", trace=norms.Unviewed,
           pruners=norms.pruners),
    Family("blocks storing and checking their input width (diffusers' Downsample2D, PVT's patch embeddings)", finish=resample.finish),
    Family("weight-standardised convolutions, per-channel gains (BiT, NFNet)", extra_rows=std_conv.extra_rows,
           inexact=std_conv.transforms_weight),
    Family("weight norm, spectral norm, parametrized weights", plain_weights=parametrized.plain_weights),
)


def pruners(model: nn.Module) -> dict:
    """Every registered family's torch-pruning handlers for the module types in ``model``."""
    found: dict = {}
    for family in FAMILIES:
        if family.pruners is not None:
            found.update(family.pruners(model))
    return found


class Seen:
    """What the families noted while one model was traced: their trace objects (see the docstring).

    One per trace; nothing about a trace is kept anywhere else, so two traces never see each
    other's notes. Made by `watching`; the engine keeps it with the trace (``Traced.seen``).
    """

    def __init__(self, model: nn.Module) -> None:
        self.by_family: dict[str, object] = {}
        self._ops = _OpWatch([f.op_reason for f in FAMILIES if f.op_reason is not None])
        self._open: list = []  # what close() undoes, in reverse
        try:
            for family in FAMILIES:
                if family.trace is not None:
                    self.by_family[family.name] = family.trace(model)
                    self._open.append(self.by_family[family.name])
            self._ops.__enter__()
            self._open.append(self._ops)
        except BaseException:
            self.close()
            raise

    def get(self, kind: type):
        """The trace object of this type (``seen.get(tied_attention.Probe)``), or None."""
        return next((t for t in self.by_family.values() if isinstance(t, kind)), None)

    def _answers(self, method: str):
        return [getattr(t, method) for t in self.by_family.values() if hasattr(t, method)]

    def fixed(self, outputs: list[torch.Tensor]) -> dict:
        """{module or autograd node: reason} for what keeps its group whole, after the forward."""
        found: dict = {}
        for answer in self._answers("fixed"):
            found.update(answer(outputs))
        found.update(self._ops.nodes)
        return found

    def owned(self) -> list[nn.Module]:
        """Layers the families cut themselves (never roots of a torch-pruning group)."""
        return [layer for answer in self._answers("owns") for layer in answer()]

    def parts(self, module: nn.Module) -> int:
        """Equal parts the forward splits ``module``'s outputs into by a stored size (1: none)."""
        return max([1, *(answer(module) for answer in self._answers("parts"))])

    def close(self) -> None:
        """End the trace: every patch and hook the families made is undone (also after an error)."""
        while self._open:
            watched = self._open.pop()
            if watched is self._ops:
                self._ops.__exit__(None, None, None)
            else:
                watched.close()


@contextmanager
def watching(model: nn.Module) -> Iterator[Seen]:
    """Run the families' trace objects over the traced forward; the `Seen` stays usable after."""
    seen = Seen(model)
    try:
        yield seen
    finally:
        seen.close()


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


def extra_rows(module: nn.Module, width: int) -> list[str]:
    """The layer's own tensors besides weight and bias with one entry per output channel."""
    return [n for f in FAMILIES if f.extra_rows is not None for n in f.extra_rows(module, width)]


def inexact(module: nn.Module) -> bool:
    """Whether a cut of this layer's inputs cannot be checked against masking exactly."""
    return any(f.inexact(module) for f in FAMILIES if f.inexact is not None)


@contextmanager
def plain_weights(modules) -> Iterator[None]:
    """Computed weights of ``modules`` (weight norm) are plain tensors inside this block."""
    modules = list(modules)
    with ExitStack() as stack:
        for family in FAMILIES:
            if family.plain_weights is not None:
                stack.enter_context(family.plain_weights(modules))
        yield


def finish(model: nn.Module, seen: Seen | None = None) -> None:
    """After cutting: every family sets the attributes its forward reads from the new sizes."""
    for family in FAMILIES:
        if family.finish is not None:
            family.finish(model, seen.by_family.get(family.name) if seen is not None else None)


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
