"""Choosing the FFN units every expert of a mixture-of-experts block loses (layers/hf_moe.py cuts them).

Each block loses ``floor(ratio x intermediate)`` units from every expert, each expert its own
lowest-scored ones; ``scope="global"`` uses the same count (experts have no common scale with
the other groups). With uniform widths every block loses the same count: the mean over blocks.
"""

from __future__ import annotations

import math

from torch import nn

from ..layers import hf_moe
from .graph import resolve_ignore
from .kinds import EXPERTS
from .plan import Step
from .select import ratio_for


def expert_steps(model: nn.Module, *, ratio, p: int, ignore=()) -> list[Step]:
    """One ``experts`` step per block whose experts shrink can cut and ``ignore`` does not name."""
    ignored = resolve_ignore(model, ignore)
    steps = []
    for name, experts in hf_moe.expert_blocks(model):
        if experts in ignored:
            continue
        r = ratio_for({name, name.rsplit(".", 1)[0]}, ratio)
        count = math.floor(r * hf_moe.width(experts) + 1e-9)
        if count:
            steps.append(EXPERTS.step(name, hf_moe.choose(experts, count, p)))
    return steps


def equal_counts(model: nn.Module, steps: list[Step], *, p: int) -> list[Step]:
    """``steps`` (experts steps) re-chosen so that every block loses the same count per expert."""
    blocks = dict(hf_moe.expert_blocks(model))
    if not steps or not blocks:
        return []
    lost = {s.layer: len(s.removed) // int(blocks[s.layer].down_proj.shape[0]) for s in steps if s.layer in blocks}
    count = math.floor(sum(lost.get(name, 0) for name in blocks) / len(blocks))
    # A block with no step was ignored or given ratio 0: every block keeps its width then.
    if count == 0 or len(lost) < len(blocks):
        return []
    return [EXPERTS.step(name, hf_moe.choose(experts, count, p)) for name, experts in blocks.items()]
