"""Opaque modules: layers traced as black boxes when torch-pruning cannot trace their inside, and the time budget.

A module whose inside breaks the tracer (a channel shuffle that divides by zero in the index
mapping, a window partition that takes minutes to expand) is run under ``no_grad`` while tracing,
and its outputs are re-attached to its inputs by one autograd node of shrink's own (`_Barrier`).
torch-pruning then sees a single customized layer with an input width and an output width and
nothing inside, so the rest of the model traces as usual. Every group that reads or writes an
opaque module is kept whole (graph.py), because nothing says how its channels map through it.

`locate` finds which module to make opaque from a tracing failure: while the model runs once,
every autograd node is attributed to the module whose forward created it, and the failing
torch-pruning node found in the traceback names that module.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..errors import UnsupportedLayerError
from . import dead


class _Barrier(torch.autograd.Function):
    """Outputs that depend on the inputs in autograd's eyes, with no channel mapping between them."""

    @staticmethod
    def forward(ctx, n_anchors: int, *tensors):
        outs = tensors[n_anchors:]
        ctx.n = len(tensors)
        return tuple(o.clone() for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        return (None,) * (ctx.n + 1)


def _width(t: torch.Tensor) -> int | None:
    """Channels of a tensor as torch-pruning counts them: dim 1 of images, the last dim of tokens."""
    if t.dim() == 0:
        return None
    return int(t.shape[1] if t.dim() >= 4 else t.shape[-1])


class OpaquePruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning handler of an opaque module: knows its widths, refuses to cut it."""

    def __init__(self) -> None:
        super().__init__()
        self.widths: dict[nn.Module, tuple[int | None, int | None]] = {}

    def prune_out_channels(self, layer: nn.Module, idxs):
        raise RuntimeError(f"shrink never cuts an opaque layer ({type(layer).__name__})")

    def prune_in_channels(self, layer: nn.Module, idxs):
        raise RuntimeError(f"shrink never cuts an opaque layer ({type(layer).__name__})")

    def get_out_channels(self, layer: nn.Module):
        return self.widths.get(layer, (None, None))[1]

    def get_in_channels(self, layer: nn.Module):
        return self.widths.get(layer, (None, None))[0]


def _opaque_forward(pruner: OpaquePruner, original):
    def forward(self, *args, **kwargs):
        with torch.no_grad():
            out = original(self, *args, **kwargs)
        leaves, spec = tree_flatten(out)
        anchors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.requires_grad]
        anchors.append(torch.zeros((), requires_grad=True))  # an output must require grad to be traced
        floats = [i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if not floats:
            return out
        attached = _Barrier.apply(len(anchors), *anchors, *[leaves[i] for i in floats])
        for i, t in zip(floats, attached):
            leaves[i] = t
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.dim()]
        pruner.widths.setdefault(self, (_width(ins[0]) if ins else None, _width(leaves[floats[0]])))
        result = tree_unflatten(leaves, spec)
        if not isinstance(result, (torch.Tensor, tuple)):
            # torch-pruning's hook reads ``outputs.grad_fn`` of anything but a tuple: a Hugging Face
            # ModelOutput (a whole LlamaModel boxed when its forward outlasts the budget) names its node.
            with contextlib.suppress(AttributeError, TypeError):
                object.__setattr__(result, "grad_fn", attached[0].grad_fn)
        return result

    return forward


@contextmanager
def opaque(modules: list[nn.Module]) -> Iterator[dict]:
    """While active, ``modules`` are black boxes to torch-pruning; yields its ``customized_pruners``.

    Each module's class is swapped for a subclass whose forward runs under ``no_grad`` (torch-pruning
    registers customized pruners by class), and swapped back on exit.
    """
    pruner = OpaquePruner()
    pruners: dict = {}
    swapped = []
    try:
        for module in modules:
            cls = type(module)
            sub = type(f"Opaque{cls.__name__}", (cls,), {"forward": _opaque_forward(pruner, cls.forward)})
            module.__class__ = sub
            swapped.append((module, cls))
            pruners[sub] = pruner
        yield pruners
    finally:
        for module, cls in swapped:
            module.__class__ = cls


class _Owners(TorchFunctionMode):
    """Attributes every autograd node created during a forward to the module that was running."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[nn.Module] = []
        self.owner: dict = {}
        self.cat_sizes: dict = {}  # a concatenation's grad_fn -> the widths it joined (grouping.py)
        self.cat_last: dict = {}  # a concatenation's grad_fn -> its inputs' last-dim sizes, if it joins another dim
        self.view_shapes: dict = {}  # a reshape's grad_fn -> (input shape, output shape) (grouping.py)
        self.unread: dict = {}  # tensors made and not yet read by a differentiable op (dead.py)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        dead.note(self.unread, out, args, kwargs)
        if func in _CATS and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            self._record_cat(out, args, kwargs or {})
        elif (isinstance(out, torch.Tensor) and type(out.grad_fn).__name__ in _VIEWS
              and args and isinstance(args[0], torch.Tensor)):
            self.view_shapes[out.grad_fn] = (tuple(args[0].shape), tuple(out.shape))
        if self.stack:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                    self.owner.setdefault(t.grad_fn, self.stack[-1])
        return out


    def _record_cat(self, out, args, kwargs) -> None:
        tensors = args[0] if args else kwargs.get("tensors", ())
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if all(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
            self.cat_sizes[out.grad_fn] = [int(t.shape[dim]) for t in tensors]
            if out.dim() >= 3 and dim % out.dim() != out.dim() - 1:
                self.cat_last[out.grad_fn] = [int(t.shape[-1]) for t in tensors]


_CATS = (torch.cat, torch.concat, torch.concatenate)
_VIEWS = ("ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0")


@contextmanager
def recording_owners(model: nn.Module) -> Iterator[_Owners]:
    """While active, every autograd node created by a forward is attributed to its module (``.owner``)."""
    mode = _Owners()

    def enter(module, _args):
        mode.stack.append(module)

    def leave(module, _args, _out):
        if mode.stack and mode.stack[-1] is module:
            mode.stack.pop()

    handles = [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        with mode:
            yield mode
    finally:
        for h in handles:
            h.remove()


def failing_nodes(exc: BaseException) -> list:
    """torch-pruning nodes held by the frames of ``exc``'s traceback, innermost first."""
    found, tb = [], exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            candidates = [value]
            if isinstance(value, tp.dependency.Dependency):
                candidates = [value.target, value.source]
            for v in candidates:
                if isinstance(v, tp.dependency.Node) and v not in found:
                    found.append(v)
    return found


class TraceTimeout(Exception):
    """Raised inside the tracer when its time budget runs out (internal)."""


class TraceFailure(Exception):
    """torch-pruning failed on this model (internal): the error and the modules it points at."""

    def __init__(self, error: BaseException, suspects: list[nn.Module], others=()) -> None:
        super().__init__(str(error))
        self.error = error
        self.suspects = suspects
        self.others = list(others)  # (error, suspects) of further failures found in the same pass


def black_box_for(suspects, parents, model, black_boxes) -> nn.Module | None:
    """The innermost module containing the failure that can be a black box: not the model, not a bare layer."""
    for module in suspects:
        while module is not None and (not any(True for _ in module.children()) or module in black_boxes):
            module = parents.get(module)  # a bare layer's failure is its block's wiring
        if module is not None and module is not model:
            return module
    return None


def trace_error(failure: TraceFailure, suspect, names, timeout) -> UnsupportedLayerError:
    where = f" in {names.get(suspect)!r}" if suspect is not None else ""
    hint = (f"keep {names.get(suspect)!r} whole with ignore=[{names.get(suspect)!r}]" if suspect is not None
            else "keep the layer that causes it whole with ignore=['its.qualified.name']")
    if isinstance(failure.error, TraceTimeout):
        return UnsupportedLayerError(
            f"tracing the model's dependency graph did not finish within {timeout:.3g} s{where}; "
            f"{hint}, or give it more time with trace_timeout=")
    return UnsupportedLayerError(
        f"tracing the model's dependency graph failed{where}: {type(failure.error).__name__}: "
        f"{short(failure.error)}. {hint[0].upper() + hint[1:]}.")


def short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise TraceTimeout in this thread after ``seconds`` (main thread only; elsewhere no limit)."""
    if seconds is None or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum, _frame):
        raise TraceTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def add_black_box_reasons(traced) -> None:
    """Layers inside a black box are kept whole, with the box and its error as the reason."""
    for box, reason in traced.opaque.items():
        prefix = f"{box}." if box else ""
        for name in list(traced.kept):
            if name == box or name.startswith(prefix):
                traced.kept[name] = f"inside {box!r}, traced as a black box ({reason})"
