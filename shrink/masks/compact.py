"""`compact`: from zeros to a smaller model, exactly.

A channel can go without changing any output when
  1. every layer that reads it has an all-zero input column for it (nobody listens), or
  2. every layer that writes it has an all-zero row for it: the channel is then a constant
     (its bias, through BatchNorm and activations), the same for every input. That constant is
     folded into the bias of each reader where this is exact: a Linear; a convolution without
     padding. A zero-padded convolution sees the constant only inside the image, so folding would
     be wrong at the borders: such channels are kept, and the report says why.
The constant is read off the model itself (forward hooks on the readers, on the example inputs
and on a second random batch), so activations, BatchNorm and anything element-wise between
writer and reader are taken as they are.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from .._util.clone import clone
from .._util import checks
from .._util import snapshot
from .._util import inputs as _inputs
from ..cut import graph, layout
from ..layers.rows import is_hf_conv1d
from ..cut.compress import Result
from ..errors import ShrinkError
from .prune import make_permanent
from ..cut.measure import count
from ..cut.kinds import GROUP
from ..cut.plan import Plan
from ..cut.surgery import Tracker, apply_steps


def _reads(layer: nn.Module) -> bool:
    conv = isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed
    return isinstance(layer, nn.Linear) or is_hf_conv1d(layer) or conv


def _column_is_zero(layer: nn.Module, c: int) -> bool:
    w = layer.weight
    if is_hf_conv1d(layer):
        return bool((w[c] == 0).all())
    if isinstance(layer, nn.Linear):
        return bool((w[:, c] == 0).all())
    per_in, per_out = layer.in_channels // layer.groups, layer.out_channels // layer.groups
    g = c // per_in
    return bool((w[g * per_out:(g + 1) * per_out, c % per_in] == 0).all())


def _row_is_zero(layer: nn.Module, c: int) -> bool | None:
    """True/False for layers with weight rows; None for layers that only scale (norms)."""
    w = getattr(layer, "weight", None)
    if not isinstance(w, torch.Tensor):
        return None
    if is_hf_conv1d(layer) or isinstance(layer, nn.Embedding):
        return bool((w[:, c] == 0).all())
    if isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)):
        rows = w.transpose(0, 1) if getattr(layer, "transposed", False) else w
        return bool((rows[c] == 0).all())
    return None


def _fold(layer: nn.Module, c: int, value: float) -> None:
    """Add what a constant input channel contributes to the reader's bias."""
    w = layer.weight
    if is_hf_conv1d(layer):
        layer.bias += w[c] * value
    elif isinstance(layer, nn.Linear):
        layer.bias += w[:, c] * value
    else:
        per_in, per_out = layer.in_channels // layer.groups, layer.out_channels // layer.groups
        g = c // per_in
        layer.bias[g * per_out:(g + 1) * per_out] += w[g * per_out:(g + 1) * per_out, c % per_in].sum(
            dim=tuple(range(1, w.dim() - 1))) * value


def _foldable(layer: nn.Module) -> str | None:
    """None if a constant can be folded into ``layer`` exactly, else why not."""
    if getattr(layer, "bias", None) is None:
        return f"{type(layer).__name__} reading it has no bias to fold a constant into"
    if isinstance(layer, nn.modules.conv._ConvNd):
        padded = layer.padding != "valid" if isinstance(layer.padding, str) else any(p != 0 for p in layer.padding)
        if padded and layer.padding_mode == "zeros":
            return "read by a zero-padded convolution: its constant is not constant at the borders"
    return None


def _input_ranges(model, readers, inputs_list):
    """Per reader: min and max of each input column over every input set (column dim: 1 for convs)."""
    lo, hi = {}, {}

    def hook(module, args):
        x = args[0].detach()
        dim = 1 if isinstance(module, nn.modules.conv._ConvNd) else x.dim() - 1
        x = x.movedim(dim, 0).reshape(x.shape[dim], -1).float()
        mn, mx = x.min(dim=1).values, x.max(dim=1).values
        lo[module] = torch.minimum(lo[module], mn) if module in lo else mn
        hi[module] = torch.maximum(hi[module], mx) if module in hi else mx

    handles = [r.register_forward_pre_hook(hook) for r in readers]
    try:
        with torch.no_grad():
            for inputs in inputs_list:
                _inputs.run(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return lo, hi


@snapshot.undo_on_failure()
def compact(model: nn.Module, example_inputs, *, atol: float = 1e-6, inplace: bool = False) -> Result:
    """Physically remove units that contribute nothing; the outputs stay the same (to ``atol``).

    Accepts models that still carry `torch.nn.utils.prune` masks (they are baked first).

    Args:
        model: a model with all-zero rows or columns (after masking or training).
        example_inputs: a tensor, tuple of tensors, or dict of keyword tensors.
        atol: the largest output change accepted, relative to the output's magnitude where that
            exceeds 1 (float32 sums in another order differ by ~1e-7 of their size); larger raises.
        inplace: cut ``model`` itself.

    Returns:
        A `Result`; ``result.plan.settings["kept"]`` lists the zero units kept and why.
    """
    checks.module(model)
    checks.number(atol, name="atol", low=0, example=" atol=1e-6 is the default.")
    work = model if inplace else clone(model)
    # The inputs are tried (masks apply as hooks) before the masks are baked: with inplace=True a
    # refusal leaves the model as it came.
    before, reference = count(work, example_inputs, return_outputs=True)
    second = _inputs.with_batch(example_inputs, 3, seed=1)
    with torch.no_grad():
        reference2 = _inputs.run(work, second)
    make_permanent(work)
    traced = graph.trace(work, example_inputs, outputs=reference)
    dg = traced.dg
    groups = [g for g in traced.groups if g.protected is None and g.channel_groups == 1]
    readers = {item.dep.target.module for g in groups for item in g.tp_group
               if not dg.is_out_channel_pruning_fn(item.dep.handler) and isinstance(item.dep.target.module, nn.Module)
               and _reads(item.dep.target.module)}
    lo, hi = _input_ranges(work, readers, [example_inputs, second])
    steps, kept, folds = [], defaultdict(int), []
    for group in groups:
        writers, reads, opaque = [], [], False
        for item in group.tp_group:
            module = item.dep.target.module
            local = dict(zip(item.root_idxs, item.idxs))
            if dg.is_out_channel_pruning_fn(item.dep.handler):
                writers.append((module, local))
            elif isinstance(module, nn.Module) and _reads(module):
                reads.append((module, local))
            elif isinstance(module, nn.Module):
                opaque = True  # an input consumer shrink cannot reason about (LSTM, MHA, ...)
        if opaque or not reads:
            continue
        removed = []
        for c in range(group.width):
            if all(_column_is_zero(m, local[c]) for m, local in reads if c in local):
                removed.append(c)
                continue
            rows = [_row_is_zero(m, local[c]) for m, local in writers if isinstance(m, nn.Module) and c in local]
            if not rows or not all(r is not False for r in rows) or not any(rows):
                continue  # some writer has a non-zero row: the channel carries information
            values = [(m, local[c], float(lo[m][local[c]]), float(hi[m][local[c]])) for m, local in reads if c in local]
            if any(v_lo != v_hi for _, _, v_lo, v_hi in values):
                kept["writers are zero but the channel is not constant (a norm across channels?)"] += 1
                continue
            reasons = [_foldable(m) for m, _, v, _ in values if v != 0.0]
            reason = next((r for r in reasons if r), None)
            if reason:
                kept[reason] += 1
                continue
            folds += [(m, lc, v) for m, lc, v, _ in values if v != 0.0]
            removed.append(c)
        if removed:
            dim = "out" if dg.is_out_channel_pruning_fn(group.pruning_fn) else "in"
            steps.append(GROUP.step(group.root_name, removed, dim=dim))
    with torch.no_grad():
        for layer, c, value in folds:
            _fold(layer, c, value)
    tracker, layout_before = Tracker(), layout.record(work)
    apply_steps(work, dg, [], steps, tracker, traced.seen)
    after, outputs = count(work, example_inputs, return_outputs=True)
    with torch.no_grad():
        outputs2 = _inputs.run(work, second)
    worst = max(_max_diff(reference, outputs), _max_diff(reference2, outputs2))
    if worst > atol:
        raise ShrinkError(f"compact changed the outputs by {worst:.3g} (relative to their scale) > atol={atol:g}: "
                          "this is a bug in shrink; please report the model")
    plan = Plan(tuple(steps), dict(sorted(tracker.kept.items())), tracker.widths(), _inputs.to_spec(example_inputs),
                {"compact": True, "kept": dict(kept), "max_output_change": worst},
                layout=layout.describe(layout_before, work))
    return Result(work, plan, before, after)


def _max_diff(a, b) -> float:
    """Largest |a - b| over all outputs, divided by the output's scale where that exceeds 1."""
    fa, fb = _inputs.flatten_outputs(a), _inputs.flatten_outputs(b)
    return max((float((fa[k].float() - fb[k].float()).abs().max()) / max(1.0, float(fa[k].abs().max()))
                for k in fa if fa[k].numel()), default=0.0)
