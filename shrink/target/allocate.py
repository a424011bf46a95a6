"""Choosing how many units each knob keeps: the most L1 importance under a cost budget.

The cost is latency (from the measured tables), MACs or parameters. Each knob offers a few
widths (for latency, only those the table measured fast), each with a value (the importance its
top units keep: the weight mass the knob carries times the share of its L1 scores they hold, see
`space.Knob.value`) and a cost. Picking one width per knob to maximise value under the budget is
a multiple-choice knapsack, solved exactly by merging Pareto frontiers knob by knob (thinned to
`MAX_POINTS` when it grows past that).

A layer's cost often depends on two knobs (its input and output widths); then `allocate`
narrows greedily with exact costs at the current widths instead (see there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .space import Space

MAX_POINTS = 1500


def knapsack(options: Sequence[Sequence[tuple[float, float]]], budget: float) -> list[int] | None:
    """Pick one ``(cost, value)`` option per group maximising total value with total cost <= budget.

    Returns the chosen option index per group, or None when even the cheapest choices exceed it.

    Example:
        >>> knapsack([[(1, 1), (3, 5)], [(1, 1), (2, 3)]], budget=4)
        [1, 0]
    """
    rest = [0.0] * (len(options) + 1)  # cheapest cost of the groups still to come
    for g in range(len(options) - 1, -1, -1):
        rest[g] = rest[g + 1] + min(c for c, _ in options[g])
    if rest[0] > budget + 1e-9:
        return None
    frontier: list[tuple[float, float, tuple | None]] = [(0.0, 0.0, None)]
    for g, opts in enumerate(options):
        limit = budget - rest[g + 1] + 1e-9
        merged = [(c + oc, v + ov, (back, j)) for c, v, back in frontier
                  for j, (oc, ov) in enumerate(opts) if c + oc <= limit]
        merged.sort(key=lambda t: (t[0], -t[1]))
        frontier, best = [], -math.inf
        for point in merged:  # keep only points no cheaper point beats
            if point[1] > best:
                frontier.append(point)
                best = point[1]
        if len(frontier) > MAX_POINTS:
            stride = len(frontier) / MAX_POINTS
            frontier = [frontier[int(i * stride)] for i in range(MAX_POINTS - 1)] + [frontier[-1]]
    chosen, back = [], frontier[-1][2]
    while back is not None:
        back, j = back
        chosen.append(j)
    return chosen[::-1]


def allocate(space: Space, layer_cost: Callable[[int, list[int]], float], budget: float,
             candidates: Sequence[Sequence[int]]) -> list[int] | None:
    """Units kept per knob, each from ``candidates[j]``, keeping the most importance with
    ``sum(layer_cost(i, keep)) <= budget`` (costs of layers on no knob included).

    When no layer joins two knobs the costs add up knob by knob and the knapsack is solved
    exactly. Otherwise (a conv between two groups costs in proportion to both widths) widths are
    narrowed greedily, one candidate step at a time, always the step losing the least importance
    per unit of cost saved, with exact costs at the current widths (as NetAdapt and HALP do), then
    any slack left is given back to the steps that keep most per unit of cost.

    Returns None when the budget is below the cheapest allocation.
    """
    cands = [sorted(set(c)) for c in candidates]
    touching: list[list[int]] = [[] for _ in space.knobs]
    coupled = False
    for i, layer in enumerate(space.layers):
        sides = {layer.knob_in, layer.knob_out} - {None}
        coupled |= len(sides) > 1
        for j in sides:
            touching[j].append(i)
    if not coupled:
        keep = [c[-1] for c in cands]
        fixed = sum(layer_cost(i, keep) for i, layer in enumerate(space.layers)
                    if layer.knob_in is None and layer.knob_out is None)
        options = [[(sum(layer_cost(i, _with(keep, j, n)) for i in touching[j]), space.knobs[j].value(n)) for n in c]
                   for j, c in enumerate(cands)]
        chosen = knapsack(options, budget - fixed)
        return None if chosen is None else [cands[j][c] for j, c in enumerate(chosen)]
    return _greedy(space, layer_cost, budget, cands, touching)


def _greedy(space, layer_cost, budget, cands, touching) -> list[int] | None:
    pos = [len(c) - 1 for c in cands]
    keep = [c[-1] for c in cands]
    spent = total(space, layer_cost, keep)

    def step(j: int, d: int) -> tuple[float, float] | None:
        """(cost change, value change) of moving knob j by d candidate positions."""
        p = pos[j] + d
        if not 0 <= p < len(cands[j]):
            return None
        trial = _with(keep, j, cands[j][p])
        dc = sum(layer_cost(i, trial) - layer_cost(i, keep) for i in touching[j])
        dv = space.knobs[j].value(cands[j][p]) - space.knobs[j].value(keep[j])
        return dc, dv

    while spent > budget + 1e-9:  # Step 1: narrow, least importance lost per cost saved first
        best = None
        for j in range(len(cands)):
            moved = step(j, -1)
            if moved is not None and moved[0] < 0:
                rate = -moved[1] / -moved[0]
                if best is None or rate < best[0]:
                    best = (rate, j, moved[0])
        if best is None:
            return None
        _, j, dc = best
        pos[j] -= 1
        keep[j] = cands[j][pos[j]]
        spent += dc
    while True:  # Step 2: spend what is left on the widenings worth most per cost
        best = None
        for j in range(len(cands)):
            moved = step(j, +1)
            if moved is not None and spent + moved[0] <= budget + 1e-9:
                rate = moved[1] / max(moved[0], 1e-12)
                if best is None or rate > best[0]:
                    best = (rate, j, moved[0])
        if best is None:
            return keep
        _, j, dc = best
        pos[j] += 1
        keep[j] = cands[j][pos[j]]
        spent += dc


def _with(keep: list[int], j: int, n: int) -> list[int]:
    out = list(keep)
    out[j] = n
    return out


def total(space: Space, layer_cost: Callable[[int, list[int]], float], keep: list[int]) -> float:
    return sum(layer_cost(i, keep) for i in range(len(space.layers)))


def macs_cost(space: Space) -> Callable[[int, list[int]], float]:
    """MACs of layer i at the kept widths: bilinear in the in/out fractions (linear for depthwise)."""
    return _bilinear(space, lambda layer: layer.macs, lambda layer: 0)


def params_cost(space: Space) -> Callable[[int, list[int]], float]:
    """Weights scale with both widths, biases with the output width."""
    return _bilinear(space, lambda layer: layer.weight, lambda layer: layer.bias)


def _bilinear(space: Space, both, out_only) -> Callable[[int, list[int]], float]:
    def cost(i: int, keep: list[int]) -> float:
        layer = space.layers[i]
        fi = keep[layer.knob_in] / space.knobs[layer.knob_in].units if layer.knob_in is not None else 1.0
        fo = keep[layer.knob_out] / space.knobs[layer.knob_out].units if layer.knob_out is not None else 1.0
        if layer.depthwise:
            fi = 1.0
        return both(layer) * fi * fo + out_only(layer) * fo

    return cost


def fine_grid(units: int, points: int = 48) -> list[int]:
    """Unit counts offered for MACs/parameter budgets: all of them when few, else ~``points``."""
    if units <= points:
        return list(range(1, units + 1))
    return sorted({max(1, round(units * j / points)) for j in range(1, points + 1)})
