"""Data batches: what goes into the model, which labels come with it, and the losses read off the output.

`shrink.evaluate` and data-aware ranking (cut/calibrate.py) read batches the same way:

- a tensor is the model's one input (an image batch, or token ids [batch, seq]);
- a dict is passed as keywords (``model(**batch)``), a Hugging Face batch; its ``labels`` entry,
  if any, is the labels;
- a tuple or list is ``(inputs, labels)`` or, where the model takes several positional inputs,
  those inputs, with the labels last if there is one more item than the model takes.

Outputs: a tensor, or a Hugging Face ``ModelOutput`` / dict (``.logits``, ``.loss``), or a tuple
whose first tensor is the logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ShrinkValueError

IGNORE_INDEX = -100  # labels that count for nothing (padding), as in torch and Hugging Face


def split(batch: Any, *, positional: int = 1, where: str = "a batch") -> tuple[tuple, dict, torch.Tensor | None]:
    """``(args, kwargs, labels)`` of one batch for a model taking ``positional`` positional inputs.

    ``positional=0`` means the model takes keywords only (its example inputs are a dict).
    """
    if isinstance(batch, torch.Tensor):
        return (batch,), {}, None
    if isinstance(batch, Mapping):
        kwargs = dict(batch)
        return (), {k: v for k, v in kwargs.items() if k != "labels"}, kwargs.get("labels")
    if isinstance(batch, (tuple, list)) and batch:
        items = list(batch)
        if isinstance(items[0], Mapping) and len(items) <= 2 and positional <= 1:  # (keyword inputs, labels)
            return (), dict(items[0]), items[1] if len(items) == 2 else None
        if len(items) == max(positional, 1):
            return tuple(items), {}, None
        if len(items) == max(positional, 1) + 1:
            return tuple(items[:-1]), {}, items[-1]
    raise ShrinkValueError(
        f"{where} must be a tensor of inputs, a dict of keyword inputs, or (inputs, labels); got "
        f"{_describe(batch)} for a model taking {positional or 'keyword'} input(s)"
    )


def to(value: Any, device) -> Any:
    """``value`` with every tensor in it (through tuples, lists and dicts) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: to(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to(v, device) for v in value)
    return value


def own_loss(output: Any) -> torch.Tensor | None:
    """The loss the model computed itself (a Hugging Face model called with ``labels``), if any."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    return loss if isinstance(loss, torch.Tensor) and loss.dim() == 0 else None


def logits(output: Any, *, where: str = "the model") -> torch.Tensor:
    """The logits of a model's output: the tensor, ``.logits``, or the first floating tensor."""
    if isinstance(output, torch.Tensor):
        return output
    found = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    if isinstance(output, (tuple, list)):
        for value in output:
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                return value
    raise ShrinkValueError(f"{where} returned {type(output).__name__}, with no logits tensor in it; "
                           "pass metric= a function (model, batch) -> (total, count) instead")


def token_nll(logits_: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token negative log-likelihood and the count of tokens it covers.

    Position t predicts token t + 1 (logits ``[..., :-1, :]`` against labels ``[..., 1:]``);
    labels equal to -100 are left out.
    """
    if logits_.dim() != labels.dim() + 1 or logits_.shape[:-1] != labels.shape:
        raise ShrinkValueError(
            f"language-model logits must be [batch, seq, vocab] with labels [batch, seq]; got logits "
            f"{tuple(logits_.shape)} and labels {tuple(labels.shape)}"
        )
    shifted, target = logits_[..., :-1, :].flatten(0, -2).float(), labels[..., 1:].flatten().long()
    keep = target != IGNORE_INDEX
    total = F.cross_entropy(shifted, target.masked_fill(~keep, 0), reduction="none")
    return (total * keep).sum(), int(keep.sum())


def _describe(batch: Any) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} (" + ", ".join(type(b).__name__ for b in batch[:4]) + ")"
    return f"a {type(batch).__name__}"
