"""Checks at the door of every public function: the argument a careless caller gets wrong first.

Each raises one `ShrinkError` that names the argument, what was found and what to pass instead,
before the function changes anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

from torch import nn

from ..errors import ShrinkTypeError, ShrinkValueError

log = logging.getLogger(__name__)


def module(model, *, what: str = "model", where: str = "") -> None:
    """``model`` must be an ``nn.Module``."""
    if isinstance(model, nn.Module):
        return
    at = f" ({where})" if where else ""
    hint = ""
    if hasattr(model, "model") and isinstance(getattr(model, "model"), nn.Module):
        hint = f" It looks like a Result: pass `{what}.model`."
    elif isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        hint = " Build the model in Python first (e.g. `model = MyNet(); model.load_state_dict(...)`)."
    raise ShrinkTypeError(f"{what} must be a torch.nn.Module{at}; got {type(model).__name__}.{hint}")


def uncompiled(model):
    """The module inside a ``torch.compile`` wrapper (layer names without ``_orig_mod.``); else ``model``.

    shrink traces and cuts the eager module; compile the smaller model again for deployment.
    """
    inner = getattr(model, "_orig_mod", None)
    if isinstance(model, nn.Module) and isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        log.info("model is wrapped by torch.compile: working on the module inside it (compile the result again)")
        return inner
    return model


def eager(model: nn.Module) -> None:
    """No TorchScript inside ``model``: shrink traces and cuts Python modules, not compiled ones."""
    import torch.jit

    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)), None)
    if found is not None:
        name, m = found
        what = "model" if not name else f"layer {name!r} of the model"
        raise ShrinkTypeError(
            f"the {what} is a TorchScript module ({type(m).__name__}, from torch.jit.script/trace/load): shrink "
            "traces and cuts eager PyTorch modules. Build it from its Python class and copy the weights in "
            "(`eager.load_state_dict(scripted.state_dict())`), then compress that.")


def ignore_list(ignore) -> list:
    """``ignore=`` as a list: one module or name, or an iterable of them; None means nothing."""
    if ignore is None:
        return []
    if isinstance(ignore, (str, nn.Module)):
        return [ignore]
    if isinstance(ignore, Mapping) or not isinstance(ignore, Iterable):
        raise ShrinkTypeError(
            f"ignore= takes a list of modules or qualified names, e.g. ignore=['fc'] or ignore=[model.fc]; "
            f"got {type(ignore).__name__} {ignore!r}"
        )
    items = list(ignore)
    for item in items:
        if not isinstance(item, (str, nn.Module)):
            raise ShrinkTypeError(
                f"ignore= takes modules or qualified names (str), e.g. ignore=['fc']; "
                f"found {type(item).__name__} {item!r} in it"
            )
    return items


def number(value, *, name: str, low: float | None = None, high: float | None = None,
           low_open: bool = False, integer: bool = False, example: str = "") -> None:
    """A finite int/float (not a bool) within [low, high] (``low_open``: strictly above ``low``)."""
    kind = "an int" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise ShrinkValueError(f"{name} must be {kind}{_range(low, high, low_open)}; got {value!r}.{example}")
    if low is not None and (value <= low if low_open else value < low):
        raise ShrinkValueError(f"{name} must be {kind}{_range(low, high, low_open)}; got {value!r}.{example}")
    if high is not None and value > high:
        raise ShrinkValueError(f"{name} must be {kind}{_range(low, high, low_open)}; got {value!r}.{example}")


def _range(low, high, low_open) -> str:
    if low is not None and high is not None:
        return f" within {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def finite_parameters(model: nn.Module, *, what: str = "model") -> None:
    """Every floating-point parameter finite: a norm over NaN ranks nothing.

    Buffers are not checked: attention masks legitimately hold -inf.
    """
    import torch

    def finite(t) -> bool:  # a slice at a time: no whole-tensor temporary for an 8B model's 1 GB embedding
        flat = t.detach().reshape(-1)
        return all(bool(torch.isfinite(part).all()) for part in flat.split(1 << 22))

    bad = sorted(name for name, t in model.named_parameters() if t.is_floating_point() and t.numel() and not finite(t))
    if bad:
        raise ShrinkValueError(
            f"{what} has NaN or infinite values in {bad[:5]}{' ...' if len(bad) > 5 else ''}: ranking channels "
            "by their norm needs finite weights. Check the checkpoint (did training diverge?) and load another."
        )


def finite_inputs(example_inputs) -> None:
    """Example inputs without NaN/inf: outputs compared on them would be NaN."""
    import torch

    from .inputs import call_args

    args, kwargs = call_args(example_inputs)
    bad = [str(i) for i, t in enumerate(args) if isinstance(t, torch.Tensor) and t.is_floating_point()
           and not bool(torch.isfinite(t).all())]
    bad += [k for k, t in kwargs.items() if isinstance(t, torch.Tensor) and t.is_floating_point()
            and not bool(torch.isfinite(t).all())]
    if bad:
        raise ShrinkValueError(f"example inputs {bad} contain NaN or infinite values; pass finite example "
                               "inputs, e.g. torch.randn(1, 3, 224, 224)")
