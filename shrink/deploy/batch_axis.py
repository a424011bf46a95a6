"""Which dimension of the inputs is the batch: found by running the model, for `export_onnx`.

Samples of a batch do not see each other (in eval mode). So dimension ``d`` is the batch when,
for the example ``a`` and another input ``b`` of the same shapes, running the model on ``a`` and
``b`` joined along ``d`` gives ``model(a)`` and ``model(b)`` joined along ``d`` in every output.
Along a sequence axis that fails: attention and recurrence mix the positions. Dimension 0 is
tried first (most models), then 1 (sequence-first models: ``nn.LSTM`` and
``nn.TransformerEncoder`` without ``batch_first``, PyTorch's word-language model). An output
that flattens the batch into another axis cannot be split and is left out of the check, as long
as another output confirms the axis.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .._util import inputs as _inputs

log = logging.getLogger(__name__)

CANDIDATES = (0, 1)
_RTOL = 1e-3


def _other(t, g: torch.Generator):
    """A tensor of the same shape and kind as ``t``, with other values (masks stay as they are)."""
    if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.dtype == torch.bool:
        return t
    if t.is_floating_point():
        return torch.randn(t.shape, generator=g).to(t.dtype).to(t.device)
    low, high = (int(t.min()), int(t.max()) + 1) if t.numel() else (0, 1)
    return torch.randint(low, max(high, low + 1), t.shape, generator=g, dtype=t.dtype).to(t.device)


def _join(a, b, dim: int):
    if isinstance(a, torch.Tensor) and a.dim() > dim and a.dtype != torch.bool:
        return torch.cat([a, b], dim=dim)
    if isinstance(a, torch.Tensor) and a.dim() > dim:  # a mask: one row per sample too
        return torch.cat([a, a], dim=dim)
    return a


def _rebuild(example_inputs, values: list):
    args, kwargs = _inputs.call_args(example_inputs)
    if kwargs:
        return dict(zip(kwargs, values))
    return values[0] if isinstance(example_inputs, torch.Tensor) else tuple(values)


def _outputs(model: nn.Module, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(_inputs.flatten_outputs(_inputs.run(model, inputs)).values())


def _same(x: torch.Tensor, y: torch.Tensor) -> bool:
    if x.shape != y.shape:
        return False
    if not x.is_floating_point():
        return torch.equal(x, y)
    scale = max(float(y.abs().max()) if y.numel() else 0.0, 1e-6)
    return float((x.double() - y.double()).abs().max()) <= _RTOL * scale if x.numel() else True


def independent_along(model: nn.Module, example_inputs, dim: int) -> bool:
    """Whether samples joined along ``dim`` come out of ``model`` unmixed (see the module docstring)."""
    args, kwargs = _inputs.call_args(example_inputs)
    values = [*args, *kwargs.values()]
    if not any(isinstance(v, torch.Tensor) and v.dim() > dim and v.dtype != torch.bool for v in values):
        return False
    g = torch.Generator().manual_seed(7)
    others = [_other(v, g) for v in values]
    try:
        out_a = _outputs(model, example_inputs)
        out_b = _outputs(model, _rebuild(example_inputs, others))
        out_ab = _outputs(model, _rebuild(example_inputs, [_join(a, b, dim) for a, b in zip(values, others)]))
    except Exception as exc:  # noqa: BLE001 - a model that cannot run joined along dim: not its batch
        log.debug("joining samples along dimension %d fails: %s", dim, exc)
        return False
    if not out_a or len(out_a) != len(out_ab):
        return False
    confirmed = 0
    for a, b, ab in zip(out_a, out_b, out_ab):
        if _merged(a, ab, dim):
            continue  # batch flattened into another axis ((seq * batch, vocab)): cannot be split here
        if a.dim() <= dim or ab.shape[dim] != a.shape[dim] + b.shape[dim]:
            return False
        n = a.shape[dim]
        if not (_same(ab.narrow(dim, 0, n), a) and _same(ab.narrow(dim, n, b.shape[dim]), b)):
            return False
        confirmed += 1
    return confirmed > 0


def _merged(a: torch.Tensor, ab: torch.Tensor, dim: int) -> bool:
    """The joined output grew along one dimension other than ``dim`` and kept ``dim``'s size: the
    model flattened its batch into that axis (PyTorch's word-language model returns
    ``decoded.view(-1, ntoken)`` of a sequence-first recurrence)."""
    if a.dim() != ab.dim() or a.dim() <= dim or ab.shape[dim] != a.shape[dim]:
        return False
    grew = [d for d in range(a.dim()) if ab.shape[d] != a.shape[d]]
    return len(grew) == 1 and grew[0] != dim and ab.shape[grew[0]] == 2 * a.shape[grew[0]]


def find(model: nn.Module, example_inputs) -> int | None:
    """The first of dimensions 0 and 1 the samples are independent along, or None."""
    for dim in CANDIDATES:
        if independent_along(model, example_inputs, dim):
            return dim
    return None


def choose(model: nn.Module, example_inputs, dynamic_batch: bool, notes: list[str]) -> int:
    """export_onnx's batch_dim=None: `find`'s dimension, else 0; ``notes`` say when it is not 0 or not found."""
    if not dynamic_batch:
        return 0
    found = find(model, example_inputs)
    if found is None:
        notes.append("could not confirm the batch axis (samples joined along dimension 0 or 1 come out mixed, "
                      "or the model does not run on them): exported with batch_dim=0; pass batch_dim= to choose")
        return 0
    if found != 0:
        notes.append(f"found the batch on dimension {found}: samples joined along dimension 0 come out mixed "
                     f"(a sequence-first model), along dimension {found} unmixed; exported with batch_dim={found}")
    return found
