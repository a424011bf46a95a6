"""Choosing what to cut: from scores and a ratio to the plan's steps.

A unit is what can only go as a whole after the coupling (units.py): usually one channel, but
both halves of a gated MLP's fused layer (``a, g = fc1(x).chunk(2, -1)``) are one unit.
Local scope: every group loses ``floor(ratio * units)`` of its units, lowest score first.
Global scope: each group's scores are divided by their mean (L1 norms of layers with different
fan-in are not comparable otherwise), pooled, and the lowest ``floor(ratio * all units)`` go.
Either way a group keeps at least one unit, or ``round_to`` channels, and widths are rounded
*up* to a multiple of ``round_to`` (shrink never removes more than asked). Attention heads form
their own pool, so ``ratio`` applies to heads and to channels alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..layers import attention, tied_attention
from . import units as _units
from .graph import Group, Traced
from .kinds import GROUP, HEAD_DIMS, HEADS
from .plan import Step


def ratio_for(names: set[str], ratio: float | Mapping[str, float]) -> float:
    """The ratio of a group whose layers are ``names`` (0 for groups a per-layer dict does not name)."""
    if not isinstance(ratio, Mapping):
        return float(ratio)
    named = [float(r) for n, r in ratio.items() if n in names]
    return max(named) if named else 0.0


def _min_keep(channel_groups: int, units: int, round_to: int | None) -> int:
    """Fewest units to keep so that kept channels are a positive multiple of round_to."""
    if not round_to:
        return 1
    step = round_to // math.gcd(round_to, channel_groups)
    return min(units, step)


def _round_keep(keep: int, channel_groups: int, units: int, round_to: int | None) -> int:
    if not round_to:
        return keep
    step = round_to // math.gcd(round_to, channel_groups)
    return min(units, math.ceil(keep / step) * step)


_unit_scores = _units.unit_scores  # one score per unit after the coupling (target/space.py ranks knobs with it)


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    order = torch.argsort(scores, stable=True)
    return sorted(order[:n].tolist())


def width_steps(traced: Traced, *, ratio, scope: str, p: int, round_to: int | None,
                unranked: dict[str, str] | None = None) -> list[Step]:
    """Steps cutting the channel groups (everything but attention heads).

    A group whose units cannot be ranked (the tracer's index mapping does not fit its layers) is
    left out, with the reason in ``unranked``.
    """
    pool = []
    for group in traced.groups:
        if group.protected is not None or group.width % group.channel_groups:
            continue
        r = ratio_for(group.producers(), ratio)  # a per-layer ratio names a producer
        if r <= 0:
            continue
        try:
            # Units after the coupling (units.py): a gated MLP's two halves go together.
            scores = _units.unit_scores(traced, group, p)
        except (IndexError, RuntimeError, ValueError) as exc:  # a mis-traced group: its indices do not fit
            if unranked is not None:
                unranked[group.root_name] = f"its channels could not be ranked ({type(exc).__name__}: {exc})"
            continue
        pool.append((group, r, scores))
    removed = _local(pool, round_to) if scope == "local" else _global(pool, round_to)
    removed = _tied_multiples(traced, pool, removed)
    dim = {True: "out", False: "in"}
    steps = [
        GROUP.step(g.root_name, _units.channels(traced, g, units), dim=dim[traced.dg.is_out_channel_pruning_fn(g.pruning_fn)])
        for (g, _, _), units in zip(pool, removed)
        if units
    ]
    return steps + tied_dim_steps(traced, steps, p)


def _tied_input(traced: Traced, pool) -> dict:
    """For each attention block tied to its input width: the pool entry holding that width."""
    found = {}
    for block in traced.tied:
        for i, (group, _, _) in enumerate(pool):
            if group.has(traced.names[block.qkv], "in"):
                found[block.name] = (block, i)
    return found


def _tied_multiples(traced: Traced, pool, removed: list[list[int]]) -> list[list[int]]:
    """A width read as heads x head_dim loses a multiple of the head count: drop the best-scored extras."""
    multiple = [1] * len(pool)
    for block, i in _tied_input(traced, pool).values():
        multiple[i] = math.lcm(multiple[i], block.num_heads)
    out = []
    for (_, _, scores), units, m in zip(pool, removed, multiple):
        n = len(units) // m * m
        out.append(sorted(sorted(units, key=lambda u: (float(scores[u]), u))[:n]))
    return out


def tied_dim_steps(traced: Traced, steps: list[Step], p: int) -> list[Step]:
    """Each attention block tied to a width that ``steps`` cut loses as many head dims as that
    width loses channels (tied_attention.py); also used after uniform widths re-choose the cuts."""
    by_root = {s.layer: s for s in steps if s.kind is GROUP and s.removed}
    found = {}
    for block in traced.tied:
        for group in traced.groups:
            step = by_root.get(group.root_name)
            if step is not None and group.has(traced.names[block.qkv], "in"):
                found[block.name] = HEAD_DIMS.step(block.name, tied_attention.to_remove(block, len(step.removed), p),
                                                   partner=traced.names[block.proj])
    return list(found.values())


def _local(pool, round_to) -> list[list[int]]:
    removed = []
    for group, r, scores in pool:
        units = len(scores)
        keep = max(units - math.floor(r * units + 1e-9), _min_keep(group.channel_groups, units, round_to))
        keep = _round_keep(keep, group.channel_groups, units, round_to)
        removed.append(_lowest(scores, units - keep))
    return removed


def _global(pool, round_to) -> list[list[int]]:
    if not pool:
        return []
    r = pool[0][1]
    normed = [scores / scores.mean().clamp_min(1e-12) for _, _, scores in pool]
    entries = sorted((float(s), gi, u) for gi, scores in enumerate(normed) for u, s in enumerate(scores))
    target = math.floor(r * len(entries) + 1e-9)
    left = [len(s) for s in normed]
    floor_ = [_min_keep(g.channel_groups, len(s), round_to) for (g, _, _), s in zip(pool, normed)]
    chosen: list[list[int]] = [[] for _ in pool]
    for _, gi, u in entries:
        if target == 0:
            break
        if left[gi] > floor_[gi]:
            chosen[gi].append(u)
            left[gi] -= 1
            target -= 1
    removed = []
    for (group, _, scores), units in zip(pool, chosen):
        keep = _round_keep(len(scores) - len(units), group.channel_groups, len(scores), round_to)
        order = sorted(units, key=lambda u: (float(scores[u]), u))
        removed.append(sorted(order[: len(scores) - keep]))
    return removed


def head_steps(traced: Traced, *, ratio, scope: str, p: int) -> list[Step]:
    """Steps cutting whole heads (or key/value groups) from each attention block."""
    pool = []
    for block in traced.blocks:
        names = {block.name} | {traced.names[m] for m in (block.q, block.k, block.v)}
        r = ratio_for(names, ratio)
        if r > 0 and block.units > 1 and not block.locked:
            pool.append((block, r, attention.unit_scores(block, p)))
    if scope == "local":
        removed = [_lowest(s, min(math.floor(r * len(s) + 1e-9), len(s) - 1)) for _, r, s in pool]
    else:
        removed = _global([(_Units(), r, s) for _, r, s in pool], None)
    return [
        HEADS.step(block.name, units, partner=traced.names[block.out])
        for (block, _, _), units in zip(pool, removed)
        if units
    ]


class _Units:
    """A stand-in group for heads in the global pool: one channel group."""

    channel_groups = 1
