"""What a model is worth on data: top-1 accuracy, perplexity, or a metric of the caller's."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .._util import batches, checks
from ..errors import ShrinkValueError

METRICS = ("accuracy", "perplexity")

Metric = Callable[[nn.Module, Any], tuple[float, float]]


@torch.no_grad()
def evaluate(model: nn.Module, data: Iterable, *, metric: str | Metric = "accuracy", device: str = "cpu") -> float:
    """The model's ``metric`` over every batch of ``data``, in eval mode and without gradients.

    Args:
        model: the model (moved to ``device``; its train/eval mode is restored afterwards).
        data: batches, e.g. a DataLoader.
        metric: what to compute:

            - ``"accuracy"`` (default): top-1 accuracy in [0, 1] over batches of ``(inputs,
              labels)``. The class axis is dim 1 (logits [N, C] against labels [N], or per-pixel
              [N, C, H, W] against [N, H, W]); labels of -100 are not counted.
            - ``"perplexity"``: ``exp`` of the mean next-token negative log-likelihood, for
              language models. Batches are token ids [batch, seq] (the ids are the labels),
              ``(ids, labels)``, or a dict of keyword inputs with ``input_ids`` (and optionally
              ``attention_mask``, ``labels``). Position t predicts token t + 1; labels of -100 and
              positions whose ``attention_mask`` is 0 are left out. A Hugging Face model's
              ``.logits`` are read; its own ``.loss`` is not used, so every model is scored alike.
            - a function ``metric(model, batch) -> (total, count)``: evaluate returns the sum of
              the totals divided by the sum of the counts (e.g. correct answers and samples, or
              summed squared error and elements). The batch arrives on ``device``.
        device: where to run.

    Returns:
        The metric as a float (higher is better for accuracy, lower for perplexity).

    Raises:
        ShrinkValueError: an unknown metric, batches of the wrong form, or data with nothing to count.

    Example:
        >>> import torch, shrink
        >>> net = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.eye(2)), net.bias.zero_()
        >>> shrink.evaluate(net, [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))])
        0.5
    """
    checks.module(model)
    if not callable(metric) and metric not in METRICS:
        raise ShrinkValueError(f"metric must be one of {METRICS} or a function (model, batch) -> (total, count); "
                               f"got {metric!r}")
    one = {"accuracy": _accuracy, "perplexity": _perplexity}.get(metric) if isinstance(metric, str) else None
    was_training = model.training
    model.eval().to(device)
    total = count = 0.0
    try:
        for batch in data:
            if one is not None:
                t, n = one(model, batch, device)
            else:
                t, n = _user(metric, model, batches.to(batch, device))
            total, count = total + t, count + n
    finally:
        model.train(was_training)
    if count == 0:
        what = {"accuracy": "samples", "perplexity": "tokens (every label was -100, or each row has one token)"}
        raise ShrinkValueError(f"the evaluation data yielded no {what.get(metric, 'count') if isinstance(metric, str) else 'count'}; "
                               "pass a non-empty loader")
    if metric == "perplexity":
        try:
            return math.exp(total / count)
        except OverflowError:
            return math.inf
    return total / count


def _accuracy(model: nn.Module, batch, device) -> tuple[float, int]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], torch.Tensor)
            and isinstance(batch[0], (torch.Tensor, dict))):
        raise ShrinkValueError(
            "accuracy needs data that yields (inputs, labels) pairs of tensors, like a DataLoader over a "
            f"TensorDataset(x, y); got a {type(batch).__name__}"
            + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            + ". For a language model pass metric='perplexity'."
        )
    x, y = batches.to(batch[0], device), batch[1].to(device)
    out = batches.logits(model(**x) if isinstance(x, dict) else model(x))
    if out.dim() < 2 or out.shape[0] != y.shape[0] or out.shape[2:] != y.shape[1:]:
        raise ShrinkValueError(f"accuracy compares logits [N, C, ...] with labels [N, ...]; got logits "
                               f"{tuple(out.shape)} and labels {tuple(y.shape)}")
    keep = y != batches.IGNORE_INDEX
    return int(((out.argmax(dim=1) == y) & keep).sum()), int(keep.sum())


def _perplexity(model: nn.Module, batch, device) -> tuple[float, int]:
    args, kwargs, labels = batches.split(batch, positional=1, where="a perplexity batch")
    args, kwargs = batches.to(args, device), batches.to(kwargs, device)
    ids = kwargs.get("input_ids") if kwargs else args[0]
    if labels is None:
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point():
            raise ShrinkValueError("perplexity needs token ids: batches of integer tensors [batch, seq], (ids, "
                                   "labels), or dicts with 'input_ids'")
        labels = ids
    labels = labels.to(device)
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.shape == labels.shape:
        labels = labels.masked_fill(mask == 0, batches.IGNORE_INDEX)
    out = batches.logits(model(*args, **kwargs))
    total, n = batches.token_nll(out, labels)
    return float(total), n


def _user(metric: Metric, model: nn.Module, batch) -> tuple[float, float]:
    got = metric(model, batch)
    try:
        total, n = got
        total, n = float(total), float(n)
    except (TypeError, ValueError):
        raise ShrinkValueError(f"metric function {getattr(metric, '__name__', metric)!r} must return (total, count), "
                               f"two numbers; got {type(got).__name__} {str(got)[:60]}") from None
    return total, n
