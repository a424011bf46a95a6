"""Undo a physical cut: keep each module's attributes as they were, and put them back on failure.

Cutting replaces a layer's parameters with new, smaller tensors and updates its size attributes
(``out_features`` ...); it does not write into the old tensors. So a shallow copy of every
module's ``__dict__`` (its parameter, buffer and child tables copied, the tensors shared) is
enough to restore the model exactly, at no memory cost. Code that writes into tensors in place
(``load_state_dict``, re-initialisation) is not covered.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch
from torch import nn


def take(model: nn.Module) -> list[tuple[nn.Module, dict]]:
    """The attributes of every module of ``model``, tables copied one level deep."""
    return [(m, {k: copy.copy(v) if isinstance(v, dict) else v for k, v in m.__dict__.items()})
            for m in model.modules()]


def restore(snapshot: list[tuple[nn.Module, dict]]) -> None:
    """Put every module back as `take` found it."""
    for module, attrs in snapshot:
        module.__dict__.clear()
        module.__dict__.update(attrs)


def undo_on_failure(*, values: Callable[[dict], bool] = lambda kwargs: True):
    """Decorate ``fn(model, ...)``: with ``inplace=True``, an exception leaves ``model`` as it came.

    ``values(kwargs)`` says whether the call may also write into tensors in place (fine-tuning,
    re-initialisation, bias folding); then their values are copied first (one model's worth of
    memory) and put back too. Without ``inplace=True`` the call runs as it is.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def wrapper(model, *args, **kwargs):
            if not kwargs.get("inplace") or not isinstance(model, nn.Module):
                return fn(model, *args, **kwargs)
            attrs = take(model)
            saved = ({k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
                     if values(kwargs) else None)
            try:
                return fn(model, *args, **kwargs)
            except BaseException:
                restore(attrs)
                if saved is not None:
                    with torch.no_grad():
                        for k, v in model.state_dict(keep_vars=True).items():
                            v.copy_(saved[k])
                raise

        return wrapper

    return wrap
