"""Units after the coupling: which channels of a group can only go together.

A group's width counts its root layer's channels, but the tracer may tie several of them into one
unit. A gated MLP writes ``a, g = fc1(x).chunk(2, -1); fc2(a * silu(g))``: channel j of ``a`` and
channel j of ``g`` meet in the product, so removing row j of ``fc1`` also removes row H + j.
The group is 2H channels wide but has H units; a ratio of 0.5 must remove H/2 units (H channels),
not H channels chosen one by one (which, paired up, would remove most of the units).

The tracer merges these pairs silently. To see them, `classes` walks the group's dependencies the
way torch-pruning does, but keeps, for every (layer, dimension, index) reached, *all* the root
channels that reach it; root channels that reach one index are one unit (a union-find).
Only groups that pass through a split, unbind or slice can tie root channels together, so only
those are walked (one more walk per such group).
"""

from __future__ import annotations

import numpy as np
import torch
import torch_pruning as tp

from . import grouping
from .graph import Group, Traced
from .importance import group_scores

_FORKS = (tp.ops._SplitOp, tp.ops._UnbindOp, tp.ops._SliceOp)


def _may_tie(group: Group) -> bool:
    return any(isinstance(item.dep.target.module, _FORKS) for item in group.tp_group)


def _walk(dg: grouping.Graph, group: Group) -> list[list[int]]:
    """Every list of root channels that reach one index of one layer (the group's walk, unmerged).

    grouping.py's walk (each position once, on arrays), keeping every root an index is reached
    from; positions whose root a grouped-query mapping forgot are left out.
    """
    start = np.stack([np.arange(group.width), np.arange(group.width)], 1).astype(np.int64)
    found = []
    for _, parts in dg.walk(group.tp_group[0].dep, start, group.root_name).values():
        pos = np.concatenate(parts)
        pos = pos[pos[:, 1] >= 0]
        pos = pos[np.lexsort((pos[:, 1], pos[:, 0]))]
        for chunk in np.split(pos[:, 1], np.flatnonzero(np.diff(pos[:, 0])) + 1):
            if len(chunk) > 1:
                found.append(chunk.tolist())
    return found


def classes(traced: Traced, group: Group) -> list[tuple[int, ...]] | None:
    """Root channels that go together, one tuple per unit in order of their first channel;
    None when every channel is a unit of its own (the common case)."""
    cache = traced.__dict__.setdefault("_unit_classes", {})
    key = id(group.tp_group)  # the group is held in the entry, so that its id cannot be reused meanwhile
    if key in cache and cache[key][0] is group.tp_group:
        return cache[key][1]
    found = None
    if group.channel_groups == 1 and _may_tie(group):
        parent = list(range(group.width))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        tied = False
        for roots in _walk(traced.dg, group):
            first = root(roots[0])
            for r in roots[1:]:
                other = root(r)
                if other != first and 0 <= r < group.width:
                    parent[max(other, first)] = min(other, first)
                    first = min(other, first)
                    tied = True
        if tied:
            members: dict[int, list[int]] = {}
            for i in range(group.width):
                members.setdefault(root(i), []).append(i)
            found = [tuple(m) for _, m in sorted(members.items())]
    cache[key] = (group.tp_group, found)
    return found


def unit_scores(traced: Traced, group: Group, p: int) -> torch.Tensor:
    """One score per unit: the Lp norm of all its channels' producing rows together."""
    scores = group_scores(traced, group, p)
    tied = classes(traced, group)
    if tied is None:
        # Grouped convs, GroupNorm, MHA: unit j is channel j of every channel group.
        return scores.view(group.channel_groups, -1).sum(dim=0)
    powered = scores.pow(p)  # the rows of a unit's channels taken together, as for coupled producers
    return torch.stack([powered[list(c)].sum() for c in tied]).pow(1.0 / p)


def channels(traced: Traced, group: Group, units: list[int]) -> tuple[int, ...]:
    """The root channels of ``units``."""
    tied = classes(traced, group)
    if tied is not None:
        return tuple(sorted(i for u in units for i in tied[u]))
    per = group.width // group.channel_groups
    return tuple(sorted(u + g * per for g in range(group.channel_groups) for u in units))


def total(traced: Traced, group: Group) -> int:
    """How many units the group has (its width where no channels are tied)."""
    tied = classes(traced, group)
    return group.width // group.channel_groups if tied is None else len(tied)


def count(traced: Traced, group: Group, removed: tuple[int, ...]) -> int:
    """How many units the root channels ``removed`` take away (whole units only)."""
    tied = classes(traced, group)
    if tied is None:
        return len(removed) // group.channel_groups
    gone = set(removed)
    return sum(all(i in gone for i in c) for c in tied)
