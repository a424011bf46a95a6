"""What `fit` minimises: cross-entropy on labels (``task="classify"``) or on the next token (``task="lm"``).

A classifier's batch is ``(inputs, labels)``. A causal language model's batch is one of:

- a LongTensor of token ids ``[batch, time]``: position t predicts token t+1 (the logits of the
  last position and the first token are not scored);
- a dict of the model's keyword inputs with ``"input_ids"`` (Hugging Face style): ``"labels"``
  when present (else the ids) are shifted the same way, positions whose ``attention_mask`` is 0
  or whose label is -100 are not scored;
- a pair ``(ids, targets)`` of the same shape, ``targets[:, t]`` being the token after
  ``ids[:, t]`` (nanoGPT's ``get_batch``): scored as they are, without a shift.

A model may return logits, a tuple whose first item is the logits, or an object with ``.logits``
(Hugging Face). Distilling a language model compares the teacher's and student's distributions
over the vocabulary at every scored position (Hinton et al. 2015, per token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShrinkValueError

TASKS = ("classify", "lm")
IGNORE = -100  # the label cross-entropy skips (PyTorch's and Hugging Face's convention)


@dataclass
class Batch:
    """One batch, taken apart.

    Attributes:
        inputs: what the model is called with (a tensor, or a dict of keyword tensors).
        targets: class labels [batch], or next-token ids [batch, time] with -100 where unscored.
        shift: the model's logits at t predict ``targets[:, t + 1]`` (ids and dicts), so the last
            position's logits and the first target are dropped.
    """

    inputs: torch.Tensor | dict
    targets: torch.Tensor
    shift: bool = False

    def to(self, device) -> Batch:
        inputs = ({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
                  if isinstance(self.inputs, dict) else self.inputs.to(device))
        return Batch(inputs, self.targets.to(device), self.shift)

    @property
    def count(self) -> int:
        """What the loss is a mean over: samples (classify) or scored tokens (lm)."""
        if self.targets.dim() == 1:
            return len(self.targets)
        t = self.targets[:, 1:] if self.shift else self.targets
        return int((t != IGNORE).sum())


def split(batch, task: str, where: str) -> Batch:
    """``batch`` as a `Batch`; a `ShrinkValueError` that says what a batch must be otherwise."""
    if task == "classify":
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
            return Batch(batch[0], batch[1])
        raise ShrinkValueError(
            f"{where} must yield (inputs, labels) pairs of tensors, like a DataLoader over a TensorDataset(x, y); "
            f"got a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            + (". For a language model's token ids pass task='lm'." if isinstance(batch, torch.Tensor) else ""))
    if isinstance(batch, torch.Tensor) and _ids(batch):
        return Batch(batch, batch, shift=True)
    if isinstance(batch, dict) and _ids(batch.get("input_ids")):
        labels = batch.get("labels", batch["input_ids"]).clone()
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.shape == labels.shape:
            labels[mask == 0] = IGNORE
        return Batch({k: v for k, v in batch.items() if k != "labels"}, labels, shift=True)
    if (isinstance(batch, (tuple, list)) and len(batch) == 2 and _ids(batch[0]) and isinstance(batch[1], torch.Tensor)
            and batch[1].shape == batch[0].shape):
        return Batch(batch[0], batch[1])
    raise ShrinkValueError(
        f"with task='lm', {where} must yield token ids: a LongTensor [batch, time], a dict with 'input_ids' "
        "(and optionally 'attention_mask', 'labels'), or (ids, next_ids) pairs of the same shape; "
        f"got a {type(batch).__name__}" + (f" of dtype {batch.dtype} and shape {tuple(batch.shape)}"
                                           if isinstance(batch, torch.Tensor) else ""))


def _ids(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 2 and not t.is_floating_point() and not t.is_complex()


def logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The model's logits on the batch (``.logits`` of a Hugging Face output, item 0 of a tuple)."""
    out = model(**batch.inputs) if isinstance(batch.inputs, dict) else model(batch.inputs)
    if hasattr(out, "logits"):
        out = out.logits
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if batch.shift:
        out = out[:, :-1]
    return out.float()  # the loss in float32, also under autocast


def _scored(student: torch.Tensor, batch: Batch, teacher: torch.Tensor | None = None):
    """Flatten token logits to [positions, vocab], keeping only scored positions."""
    targets = batch.targets[:, 1:] if batch.shift else batch.targets
    keep = targets.reshape(-1) != IGNORE
    flat = lambda t: t.reshape(-1, t.shape[-1])[keep]  # noqa: E731
    return flat(student), targets.reshape(-1)[keep], (flat(teacher) if teacher is not None else None)


def loss(student: torch.Tensor, batch: Batch, *, teacher: torch.Tensor | None = None,
         temperature: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """Mean cross-entropy (or Hinton distillation with a teacher's logits) over samples or scored tokens."""
    from .train import distillation_loss

    targets = batch.targets
    if student.dim() > 2:
        student, targets, teacher = _scored(student, batch, teacher)
    if teacher is None:
        return F.cross_entropy(student, targets)
    return distillation_loss(student, teacher, targets, temperature=temperature, alpha=alpha)


@torch.no_grad()
def lm_loss(model: nn.Module, loader, *, device) -> float:
    """Mean next-token cross-entropy (nats per scored token) of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for raw in loader:
        batch = split(raw, "lm", "val_loader").to(device)
        student, targets, _ = _scored(logits(model, batch), batch)
        total += float(F.cross_entropy(student, targets, reduction="sum"))
        n += len(targets)
    model.train(was_training)
    if n == 0:
        raise ShrinkValueError("val_loader yielded no tokens to score; pass batches of token ids [batch, time >= 2]")
    return total / n
