"""Data-aware importance: measure each unit's worth on calibration batches, rank it like L1.

The formulas and their sources are in importance.py. This file measures them and hands them to
the ranking in the one form every ranker already reads: the producing layers' weight rows. While
`Ranking.applied` is active, each measured parameter holds a non-negative *stand-in* tensor whose
row sums are the data-aware score, so the L1 ranking (``p=1``: the sum of |entries| over a unit's
producing rows, scattered over coupled layers, heads, GQA groups, tied units and experts) ranks by
the data instead of the weights, aggregated exactly as L1 is. The real weights are back before
anything is cut.

- taylor: the stand-in of every parameter is ``|w * dL/dw|`` itself.
- activation: the stand-in of a layer is its per-channel mean |output|, spread evenly over the
  channel's row (each entry ``a_c / fan_in``); column sums are then equal for every column, so a
  ranker that also reads input columns (shared experts' down projection) is shifted by a constant.
  An attention block's q rows hold the mean |input| of its output projection (the heads'
  attention outputs, Minitron's head score) and its k and v rows hold zeros.

Layers that cannot be measured keep their weights (so they rank by L1) and are listed in
``Ranking.by_weight``: for activation, recurrent layers, stacked mixture-of-experts tensors,
parametrized weights and layers the calibration never ran; for taylor, layers without a gradient.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .._util import batches
from .._util import inputs as _inputs
from ..errors import ShrinkTypeError, ShrinkValueError
from ..layers import hf_moe
from ..layers.recurrent import is_recurrent
from ..layers.rows import is_hf_conv1d, out_rows
from .graph import Traced

log = logging.getLogger(__name__)

IMPORTANCES = ("l1", "l2", "activation", "taylor")
DATA_AWARE = ("activation", "taylor")


@dataclass(frozen=True)
class Ranking:
    """Data-aware scores measured on calibration batches, and what measuring them cost.

    Attributes:
        method: "activation" or "taylor".
        batches: calibration batches run.
        seconds: wall time of the calibration passes.
        loss: what taylor differentiated (None for activation).
        by_weight: producing layers that could not be measured and rank by their L1 norm.
        rows: activation: layer name -> one score per output row.
        products: taylor: parameter name -> ``|w * dL/dw|``.
    """

    method: str
    batches: int
    seconds: float
    loss: str | None = None
    by_weight: tuple[str, ...] = ()
    rows: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    products: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"method": self.method, "batches": self.batches, "seconds": round(self.seconds, 4),
                "loss": self.loss, "by_weight": list(self.by_weight)}

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Swap in the stand-ins on ``model`` (the measured model or a copy: matched by name), then put back."""
        saved: list[tuple[nn.Parameter, torch.Tensor]] = []
        seen: set[int] = set()
        try:
            with torch.no_grad():
                for param, standin in self._standins(model):
                    if id(param) in seen:  # a tied weight takes the first layer's stand-in
                        continue
                    seen.add(id(param))
                    saved.append((param, param.data))
                    param.data = standin.to(device=param.device, dtype=param.dtype)
            yield model
        finally:
            for param, data in reversed(saved):
                param.data = data

    def _standins(self, model: nn.Module) -> Iterator[tuple[nn.Parameter, torch.Tensor]]:
        params = dict(model.named_parameters(remove_duplicate=False))
        for name, product in self.products.items():
            if name in params and params[name].shape == product.shape:
                yield params[name], product
        for name, scores in self.rows.items():
            module = _submodule(model, name)
            weight = module._parameters.get("weight") if module is not None else None
            if weight is not None:
                spread = _spread(module, scores)
                if spread is not None:
                    yield weight, spread


def check(importance, norm, calibration) -> tuple[str, int]:
    """The importance asked for and the norm ``p`` the ranking then uses; one clear error otherwise."""
    if importance is None:
        importance = {1: "l1", 2: "l2"}.get(norm) if not isinstance(norm, bool) else None
        if importance is None:
            raise ShrinkValueError(f"norm must be 1 (L1) or 2 (L2); got {norm!r}")
    if importance not in IMPORTANCES:
        raise ShrinkValueError(f"importance must be one of {IMPORTANCES}; got {importance!r}. "
                               "'l1' ranks by the weights alone; 'activation' and 'taylor' need calibration= batches.")
    if importance in ("l1", "l2") and norm not in (1, {"l1": 1, "l2": 2}[importance]):
        raise ShrinkValueError(f"importance={importance!r} and norm={norm!r} disagree; give one of them "
                               f"(importance='l2' is norm=2)")
    if importance in DATA_AWARE:
        if norm != 1:
            raise ShrinkValueError(f"importance={importance!r} ranks by data, not by a weight norm: drop norm={norm!r}")
        if calibration is None:
            raise ShrinkValueError(
                f"importance={importance!r} needs calibration=, a few batches of example inputs (a list or a "
                "DataLoader of tensors, dicts or (inputs, labels) pairs; 8-32 batches are typical). "
                "Without data use importance='l1'.")
        if not isinstance(calibration, (Ranking, Iterable)) or isinstance(calibration, (torch.Tensor, str, dict)):
            raise ShrinkTypeError(
                f"calibration must be an iterable of batches (a list or a DataLoader); got {type(calibration).__name__}. "
                "Wrap one batch as [batch].")
    elif calibration is not None:
        raise ShrinkValueError(f"calibration= is only read by importance='activation' or 'taylor'; "
                               f"importance={importance!r} ranks by the weights. Drop calibration= or pick one.")
    return importance, {"l2": 2}.get(importance, 1)


def prepare(traced: Traced, example_inputs, importance: str, calibration) -> Ranking | None:
    """The `Ranking` for ``traced.model`` (None for weight norms; a given `Ranking` is reused)."""
    if importance not in DATA_AWARE:
        return None
    if isinstance(calibration, Ranking):
        return calibration
    return measure(traced, example_inputs, calibration, method=importance)


def measure(traced: Traced, example_inputs, calibration: Iterable, *, method: str) -> Ranking:
    """Run ``calibration`` through ``traced.model`` and record ``method``'s scores (see importance.py)."""
    model = traced.model
    positional = 0 if isinstance(example_inputs, dict) else len(_inputs.call_args(example_inputs)[0])
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    started = time.perf_counter()
    if method == "activation":
        rows, n = _activations(model, traced, calibration, positional, device)
        seconds = time.perf_counter() - started
        ranking = Ranking(method, n, seconds, by_weight=_unmeasured(traced, set(rows)), rows=rows)
    else:
        products, n, loss = _taylor(model, calibration, positional, device)
        seconds = time.perf_counter() - started
        measured = {name.rsplit(".", 1)[0] for name in products}
        ranking = Ranking(method, n, seconds, loss, _unmeasured(traced, measured, experts=False), products=products)
    log.info("importance=%s: %d calibration batches in %.2f s", method, n, seconds)
    return ranking


# activation ---------------------------------------------------------------------------------

_PRODUCERS = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)


def _channel_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.modules.conv._ConvNd) else -1  # convs are [N, C, ...]; the rest [..., C]


def _mean_abs(y: torch.Tensor, dim: int) -> tuple[torch.Tensor, int]:
    y = y.detach().abs().double().movedim(dim, -1)
    return y.reshape(-1, y.shape[-1]).sum(0), y.numel() // max(y.shape[-1], 1)


def _activations(model, traced, calibration, positional, device) -> tuple[dict[str, torch.Tensor], int]:
    """Step 1: mean |output| of every producing layer's channels, and mean |input| of each
    attention block's output projection (its heads' outputs), over every calibration position."""
    outs: dict[nn.Module, list] = {}
    ins: dict[nn.Module, list] = {}

    def record(store, module, y, dim):
        if isinstance(y, torch.Tensor) and y.is_floating_point() and y.dim() >= 1:
            total, n = _mean_abs(y, dim)
            entry = store.setdefault(module, [torch.zeros_like(total), 0])
            if entry[0].shape == total.shape:
                entry[0] += total
                entry[1] += n

    names = {m: n for n, m in model.named_modules()}
    hooks = []
    for module in names:
        if (isinstance(module, _PRODUCERS) or is_hf_conv1d(module)) and not _parametrized(module):
            hooks.append(module.register_forward_hook(
                lambda m, _, y: record(outs, m, y, _channel_dim(m))))
    heads = {b.out: b for b in traced.blocks if b.out is not None}
    for module in heads:
        hooks.append(module.register_forward_pre_hook(lambda m, args: record(ins, m, args[0] if args else None, -1)))
    try:
        with torch.inference_mode(), _inputs.evaluating(model):
            n = _run(model, calibration, positional, device, lambda args, kwargs, labels: model(*args, **kwargs))
    finally:
        for hook in hooks:
            hook.remove()
    # Step 2: per-row scores in each layer's out_rows coordinates.
    rows = {}
    for module, (total, count) in outs.items():
        if count and module.weight.dim() >= 2 and _rows(module) == total.numel():
            rows[names[module]] = (total / count).float().clone()
    # Step 3: heads are ranked by their attention output (the output projection's input columns,
    # in q's row coordinates); k and v add nothing.
    for out, block in heads.items():
        if out not in ins or not ins[out][1]:
            continue
        a = (ins[out][0] / ins[out][1]).float().clone()
        width = block.num_heads * block.head_dim
        if a.numel() != width:
            continue
        for layer in {block.q, block.k, block.v}:
            if names.get(layer) in rows:
                rows[names[layer]] = torch.zeros_like(rows[names[layer]])
        q = names.get(block.q)
        if q not in rows:
            continue
        if block.interleaved:  # [head, (q, k, v), head_dim]: head h's rows start at 3 * h * head_dim
            view = rows[q][: block.units * 3 * block.head_dim].view(block.units, 3, block.head_dim)
            view[:, 0, :] = a.view(block.units, block.head_dim)
        else:  # q's rows come first in a fused [q | k | v] layer, in the output projection's column order
            rows[q][:width] = a
    return rows, n


def _rows(module: nn.Module) -> int:
    rows = out_rows(module)
    if rows is None or isinstance(module, nn.modules.conv._ConvTransposeNd) and module.groups != 1:
        return -1  # a grouped transposed conv's rows are not its output channels
    return rows.shape[0]


def _spread(module: nn.Module, scores: torch.Tensor) -> torch.Tensor | None:
    """A tensor shaped like ``module.weight`` whose out_rows sum to ``scores``, spread evenly along each row."""
    w = module.weight
    if is_hf_conv1d(module) or isinstance(module, nn.Embedding):  # stored [in, out] / [vocab, dim]
        return (scores / w.shape[0]).view(1, -1).expand(w.shape).clone()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):  # [in, out, *k]
        fan = w.shape[0] * math.prod(w.shape[2:])
        return (scores / fan).view(1, -1, *[1] * (w.dim() - 2)).expand(w.shape).clone()
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return (scores / w[0].numel()).view(-1, *[1] * (w.dim() - 1)).expand(w.shape).clone()
    return None


# taylor -------------------------------------------------------------------------------------

def _taylor(model, calibration, positional, device) -> tuple[dict[str, torch.Tensor], int, str]:
    """Step 1: accumulate dL/dw over the calibration batches; Step 2: |w * dL/dw| per entry."""
    params = [(name, p) for name, p in model.named_parameters() if p.is_floating_point()]
    saved = [(p, p.grad, p.requires_grad) for _, p in params]
    losses: list[str] = []

    def step(args, kwargs, labels):
        loss, kind = _loss(model, args, kwargs, labels)
        losses.append(kind)
        loss.backward()

    try:
        for _, p in params:
            p.grad = None
            p.requires_grad_(True)
        with torch.enable_grad(), _inputs.evaluating(model):
            n = _run(model, calibration, positional, device, step, taylor=True)
        # A parametrized weight is computed from its originals: |original * grad| is no score of its rows.
        products = {name: (p.detach() * p.grad).abs().float() for name, p in params
                    if p.grad is not None and ".parametrizations." not in name}
    finally:
        for p, grad, requires in saved:
            p.grad = grad
            p.requires_grad_(requires)
    kinds = sorted(set(losses))
    return products, n, " / ".join(kinds)


def _loss(model: nn.Module, args, kwargs, labels) -> tuple[torch.Tensor, str]:
    """The loss taylor differentiates, in this order of preference:

    1. the model's own loss (a Hugging Face model given ``labels``);
    2. with labels: cross-entropy of the logits against them (next-token, shifted by one, when
       the labels are a sequence [batch, seq] and the logits [batch, seq, vocab]);
    3. without labels, token ids in and [batch, seq, vocab] logits out: next-token cross-entropy
       against the input ids;
    4. without labels, logits [N, C, ...]: cross-entropy against their own argmax (the gradient
       says which weights the model's predictions rest on);
    5. otherwise the mean squared output.
    """
    out = model(*args, **kwargs)
    own = batches.own_loss(out)
    if own is not None:
        return own, "the model's own loss"
    z = batches.logits(out, where="the model (on a calibration batch)")
    ids = kwargs.get("input_ids") if kwargs else (args[0] if args else None)
    if labels is not None:
        if labels.dim() >= 2 and z.dim() == labels.dim() + 1 and z.shape[:-1] == labels.shape:
            nll, count = batches.token_nll(z, labels)
            return nll / max(count, 1), "next-token cross-entropy against the labels"
        if z.dim() == labels.dim() + 1 and z.shape[0] == labels.shape[0] and not labels.is_floating_point():
            return F.cross_entropy(z.float(), labels.long(), ignore_index=batches.IGNORE_INDEX), \
                "cross-entropy against the labels"
        raise ShrinkValueError(f"taylor: the calibration labels {tuple(labels.shape)} do not fit the logits "
                               f"{tuple(z.shape)}; pass class labels [N] for logits [N, C], token labels [B, T] "
                               "for logits [B, T, V], or batches without labels")
    if isinstance(ids, torch.Tensor) and not ids.is_floating_point() and z.dim() == ids.dim() + 1 \
            and z.shape[:-1] == ids.shape and ids.dim() >= 2:
        nll, count = batches.token_nll(z, ids)
        return nll / max(count, 1), "next-token cross-entropy against the input ids"
    if z.dim() >= 2 and z.shape[1] > 1:
        return F.cross_entropy(z.float(), z.detach().argmax(dim=1)), "cross-entropy against the model's own argmax"
    return z.float().pow(2).mean(), "mean squared output"


# both ---------------------------------------------------------------------------------------

def _run(model, calibration, positional, device, fn, taylor: bool = False) -> int:
    n = 0
    for batch in calibration:
        args, kwargs, labels = batches.split(batch, positional=positional, where=f"calibration batch {n}")
        if taylor and isinstance(batch, dict) and labels is not None:
            kwargs = {**kwargs, "labels": labels}  # a Hugging Face model computes its own loss
            labels = None
        args, kwargs = batches.to(args, device), batches.to(kwargs, device)
        labels = labels.to(device) if isinstance(labels, torch.Tensor) else labels
        try:
            fn(args, kwargs, labels)
        except ShrinkValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - the batch does not fit the model: say which and why
            raise ShrinkValueError(
                f"the model cannot run calibration batch {n} ({_inputs.describe(args or kwargs)}): "
                f"{type(exc).__name__}: {str(exc)[:200]}. Pass batches shaped like example_inputs, or "
                "(inputs, labels) pairs.") from exc
        n += 1
    if n == 0:
        raise ShrinkValueError("calibration= yielded no batches; pass a list or a DataLoader of example batches "
                               "(a generator is used up after one pass: wrap it in list(...))")
    return n


def _parametrized(module: nn.Module) -> bool:
    return torch.nn.utils.parametrize.is_parametrized(module) or "weight" not in module._parameters


def _unmeasured(traced: Traced, measured: set[str], experts: bool = True) -> tuple[str, ...]:
    """Producing layers of the groups being ranked that rank by their weights instead."""
    names = set()
    for group in traced.groups:
        if group.protected is None:
            names |= group.producers()
    for block in traced.blocks:
        names |= {traced.names[m] for m in (block.q, block.k, block.v) if m in traced.names}
    model = traced.model
    found = {n for n in names if n not in measured and _submodule(model, n) is not None
             and (out_rows(_submodule(model, n)) is not None or is_recurrent(_submodule(model, n)))}
    if experts:
        found |= {name for name, _ in hf_moe.expert_blocks(model)}
    return tuple(sorted(found))


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name) if name else model
    except AttributeError:
        return None
