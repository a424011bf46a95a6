"""Structural iterative pruning: cut a little, fine-tune, repeat, until the target ratio.

Seed 002's multi-step scheme applied to physical cuts. After round k of n each group keeps
``(1 - ratio) ** (k / n)`` of its original units (rounded), and after the last exactly what a
one-shot `compress` at ``ratio`` keeps, so the two are comparable unit for unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from torch import nn

from .._util import checks
from .._util import snapshot
from .._util.clone import clone
from . import calibrate, graph, layout
from .compress import Result, check_options, compress
from ..errors import ShrinkValueError
from .._util.hashing import state_hash
from .plan import Plan


def _units(traced) -> dict[str, int]:
    units = {g.root_name: g.width // g.channel_groups for g in traced.groups if g.protected is None}
    units.update({b.name: b.units for b in traced.blocks})
    return units


@snapshot.undo_on_failure()
def compress_iteratively(
    model: nn.Module,
    example_inputs,
    *,
    ratio: float = 0.5,
    steps: int = 3,
    finetune: Callable[[nn.Module, int], object] | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    norm: int = 1,
    importance: str | None = None,
    calibration=None,
    ignore=(),
    round_to: int | None = None,
    inplace: bool = False,
) -> tuple[Result, list[dict]]:
    """Reach ``ratio`` in ``steps`` physical cuts with ``finetune(model, step)`` between them.

    ``importance`` and ``calibration`` are `shrink.compress`'s: a data-aware ranking is measured
    again on the model of each round (``Result.importance`` adds up the rounds' cost).

    Returns:
        The `Result` (its plan replays every round with `shrink.load`) and one log entry per
        round: step, kept fraction scheduled, params, MACs and the metric if ``evaluate``.
    """
    checks.module(model)
    checks.ignore_list(ignore)
    importance, norm = calibrate.check(importance, norm, calibration)
    check_options(ratio, "local", norm, "trained", round_to)
    if importance in calibrate.DATA_AWARE and iter(calibration) is calibration:
        calibration = list(calibration)  # every round runs it: a generator would be used up after one
    if isinstance(ratio, dict) or not isinstance(steps, int) or steps < 1:
        raise ShrinkValueError("compress_iteratively takes one float ratio and steps >= 1")
    source_sha256 = state_hash(model.state_dict())
    original = {name: _size_pair(m) for name, m in model.named_modules()}
    work = model if inplace else clone(model)
    layout_before = layout.record(work)
    start = _units(graph.trace(work, example_inputs, ignore=ignore))
    all_steps, log, kept, before, kept_whole, cost = [], [], {}, None, {}, {}
    for k in range(1, steps + 1):
        now = _units(graph.trace(work, example_inputs, ignore=ignore))
        ratios = {}
        for name, n_now in now.items():
            n0 = start.get(name, n_now)
            goal = n0 - math.floor(n0 * ratio + 1e-9) if k == steps else round(n0 * (1 - ratio) ** (k / steps))
            goal = max(goal, 1)
            if n_now > goal:
                ratios[name] = (n_now - goal) / n_now
        result = compress(work, example_inputs, ratio=ratios or 0.0, norm=norm, importance=importance,
                          calibration=calibration, ignore=ignore, round_to=round_to, inplace=True)
        cost = _add_cost(cost, result.importance)
        before = before or result.before
        all_steps += [replace(s, round=k) for s in result.plan.steps]
        kept = _compose(kept, result.plan.kept)
        kept_whole.update(result.kept_whole)  # groups a round kept whole (protected, or healed)
        if finetune is not None:
            finetune(work, k)
        entry = {"step": k, "kept_fraction": (1 - ratio) ** (k / steps), "params": result.after.params,
                 "macs": result.after.macs}
        if evaluate is not None:
            entry["metric"] = evaluate(work)
        log.append(entry)
    plan = Plan(tuple(all_steps), kept, _widths(original, kept), result.plan.inputs,
                {**result.plan.settings, "ratio": ratio, "steps": steps}, source_sha256,
                kept_whole=dict(sorted(kept_whole.items())), checks=result.plan.checks,
                layout=layout.describe(layout_before, work))
    return Result(work, plan, before, result.after, kept_whole=dict(sorted(kept_whole.items())), importance=cost), log


def _add_cost(total: dict, one: dict) -> dict:
    """The rounds' importance records as one: batches and seconds added, layers ranked by weight joined."""
    if not total:
        return dict(one)
    out = dict(total)
    for key in ("batches", "seconds"):
        if key in one:
            out[key] = out.get(key, 0) + one[key]
    if "by_weight" in one:
        out["by_weight"] = sorted(set(out.get("by_weight", [])) | set(one["by_weight"]))
    return out


def _compose(previous: dict, current: dict) -> dict:
    """Kept indices of the latest round, expressed in the original model's coordinates."""
    out = {name: dict(dims) for name, dims in previous.items()}
    for name, dims in current.items():
        for dim, idx in dims.items():
            base = out.get(name, {}).get(dim)
            out.setdefault(name, {})[dim] = [base[i] for i in idx] if base is not None else list(idx)
    return dict(sorted(out.items()))


def _size_pair(module: nn.Module) -> dict[str, int | None]:
    return {"out": _size(module, "out"), "in": _size(module, "in")}


def _widths(original: dict, kept: dict) -> dict:
    """Before/after widths from the original sizes and the composed kept indices."""
    return {name: {dim: [original.get(name, {}).get(dim), len(idx)] for dim, idx in dims.items()}
            for name, dims in kept.items()}


def _size(module, dim: str) -> int | None:
    for out_attr, in_attr in (("out_features", "in_features"), ("out_channels", "in_channels"),
                              ("num_features", "num_features"), ("embedding_dim", "num_embeddings"),
                              ("embed_dim", "embed_dim"), ("nf", "nx")):
        attr = out_attr if dim == "out" else in_attr
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return None
