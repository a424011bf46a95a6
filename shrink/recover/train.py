"""Recovering accuracy after a cut: a plain training loop, optional distillation, and evaluation."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .._util import checks
from .._util.progress import progress_bar
from ..errors import ShrinkValueError
from .evaluate import evaluate  # evaluate.py; fit reports val_accuracy with it, older imports find it here

log = logging.getLogger(__name__)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, *, batches: int | None = None, device: str = "cpu") -> int:
    """Recompute every BatchNorm's running statistics on data, without a gradient step.

    Cutting channels changes what each BatchNorm sees downstream; its stored mean and variance
    then describe a model that no longer exists. This resets them and averages over ``batches``
    batches of ``loader`` (all, by default), with equal weight per batch.

    Returns:
        How many BatchNorm layers were recalibrated (0 leaves the model untouched).
    """
    checks.module(model)
    if batches is not None:
        checks.number(batches, name="batches", low=1, integer=True, example=" batches=None uses every batch.")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.to(device).train()
    seen = 0
    try:
        for i, batch in enumerate(loader):
            if batches is not None and i >= batches:
                break
            x, _ = _pair(batch, "the loader")
            model(x.to(device))
            seen += 1
        if seen == 0:
            raise ShrinkValueError("recalibrate_bn got no batches from the loader; pass a loader of (inputs, labels)")
    except BaseException:  # never leave reset statistics behind
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
        raise
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)


def _pair(batch, where: str):
    """A batch must be ``(inputs, labels)``: say so instead of failing inside the model."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch
    raise ShrinkValueError(
        f"{where} must yield (inputs, labels) pairs of tensors, like a DataLoader over a TensorDataset(x, y); "
        f"got a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    )


def distillation_loss(student_logits, teacher_logits, labels, *, temperature: float, alpha: float):
    """Hinton et al. 2015: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy."""
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean") * temperature**2
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def fit(
    model: nn.Module,
    train_loader: Iterable,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    alpha: float = 0.7,
    val_loader: Iterable | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` with Adam; with a ``teacher``, distil its softened outputs into ``model``.

    Args:
        model: the model to train (trained in place).
        train_loader: batches of ``(inputs, labels)``.
        epochs, lr, weight_decay: the optimiser's schedule (Adam, constant rate).
        teacher: the un-pruned model to distil from (kept frozen, in eval mode).
        temperature, alpha: distillation temperature and the weight of the soft loss.
        val_loader: evaluated after each epoch when given.
        device: where to train.
        progress: show a progress bar.

    Returns:
        One dict per epoch: ``{"epoch", "loss", "val_accuracy"}``.
    """
    checks.module(model)
    if teacher is not None:
        checks.module(teacher, what="teacher")
    ok = (isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 0
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lr, alpha, temperature, weight_decay)))
    # Written as "not (x > 0)" so that NaN fails too.
    if not ok or not (lr > 0) or not (0 <= alpha <= 1) or not (temperature > 0) or not (weight_decay >= 0) or lr == float("inf"):
        raise ShrinkValueError(
            "fit needs an int epochs >= 0, a finite lr > 0, 0 <= alpha <= 1, temperature > 0 and weight_decay >= 0; "
            f"got epochs={epochs!r}, lr={lr!r}, alpha={alpha!r}, temperature={temperature!r}, weight_decay={weight_decay!r}"
        )
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = []
    steps = epochs * len(train_loader) if hasattr(train_loader, "__len__") else None
    with progress_bar(progress, steps, "fine-tuning" if teacher is None else "distilling") as advance:
        for epoch in range(epochs):
            total, n = 0.0, 0
            for batch in train_loader:
                x, y = _pair(batch, "train_loader")
                x, y = x.to(device), y.to(device)
                logits = model(x)
                if teacher is None:
                    loss = F.cross_entropy(logits, y)
                else:
                    with torch.no_grad():
                        target = teacher(x)
                    loss = distillation_loss(logits, target, y, temperature=temperature, alpha=alpha)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total, n = total + loss.item() * len(y), n + len(y)
                advance()
            if n == 0:
                raise ShrinkValueError("train_loader yielded no batches; pass a loader of (inputs, labels) batches")
            record = {"epoch": epoch + 1, "loss": total / n}
            if val_loader is not None:
                record["val_accuracy"] = evaluate(model, val_loader, device=device)
                model.train()
            log.info("epoch %d: %s", epoch + 1, record)
            history.append(record)
    model.eval()
    return history
