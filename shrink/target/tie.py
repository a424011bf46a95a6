"""Uniform widths in target mode: knobs that `compress(uniform=True)` equalises move as one.

With ``uniform`` on (the default for a Hugging Face model, whose config describes one hidden
size, one FFN width and one head count), the ratio-mode core replaces each kind's per-layer
counts by their mean (cut/uniform.py). An allocation that gave each layer its own width would
then be undone after the fact, and the widths cut would not be the ones the tables priced. So
before allocating, the knobs of one kind are tied into one knob (same count kept everywhere,
importance summed), and kinds that `equalise` keeps whole are taken out of the space:

1. Every knob gets its kind as `equalise` names it (hidden / ffn:W / heads:N / layer pattern:W).
2. A kind with a member kept whole (a model output, ``ignore=``), and, for a Hugging Face model, a
   kind its config has no field for or one spread over several widths, stays whole: its knobs go.
3. Where the family derives the head size from the hidden size (BERT, ViT, ...), the hidden width
   follows the heads: the hidden knob joins the heads knob (kept hidden = kept heads x head_dim),
   and where the hidden width stays whole (a model output), so do the heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..cut import graph
from ..cut.uniform import candidates
from ..layers import hf_config
from .space import Knob, Space


@dataclass
class TiedKnob(Knob):
    """Several knobs moved together: keeping ``n`` of ``units`` keeps ``n * part.units / units`` of each part."""

    parts: list = field(default_factory=list)

    def value(self, keep: int) -> float:
        return sum(p.value(round(keep * p.units / self.units)) for p in self.parts)

    def part_keeps(self, keep: int) -> list[tuple[Knob, int]]:
        return [(p, round(keep * p.units / self.units)) for p in self.parts]


def kinds(traced: graph.Traced) -> dict[str, str | None]:
    """Knob name -> its uniform kind, or None where `equalise` keeps that kind whole."""
    members = candidates(traced)
    can_say = hf_config.expressible(traced.model)
    whole = set()
    for kind, xs in members.items():
        family = kind.split(":")[0] if kind.split(":")[0] in ("hidden", "ffn", "heads") else "other"
        if any(cut.whole(x) for cut, x, _ in xs) or family not in can_say:
            whole.add(kind)
    if hf_config.is_hf(traced.model):
        for family in ("hidden", "ffn", "heads"):
            ks = [k for k in members if k.split(":")[0] == family]
            sizes = {cut.size(x) for k in ks for cut, x, _ in members[k]}
            if len(sizes) > 1:
                whole.update(ks)
    heads = [k for k in members if k.startswith("heads:")]
    if "hidden" in whole and len(heads) == 1 and hf_config.head_dim_follows_hidden(traced.model, traced.blocks):
        whole.add(heads[0])  # head size = hidden / heads: with the hidden width whole, so are the heads
    return {cut.name_of(x): None if kind in whole else kind for kind, xs in members.items() for cut, x, _ in xs}


def tie(space: Space, traced: graph.Traced) -> Space:
    """``space`` with each uniform kind's knobs merged into one (see the module docstring)."""
    kind_of = kinds(traced)
    by_kind: dict[str, list[int]] = {}
    for j, knob in enumerate(space.knobs):
        kind = kind_of.get(knob.name)
        if kind is not None:
            by_kind.setdefault(kind, []).append(j)
    heads = [k for k in by_kind if k.startswith("heads:")]
    follow = "hidden" in by_kind and len(heads) == 1 and hf_config.head_dim_follows_hidden(traced.model, traced.blocks)
    knobs, index = [], {}
    for kind, js in by_kind.items():
        if follow and kind == "hidden":
            continue
        parts = [space.knobs[j] for j in js]
        if len({p.units for p in parts}) > 1:  # equalise removes one count from unequal widths: keep them apart
            for j in js:
                index[j] = len(knobs)
                knobs.append(space.knobs[j])
            continue
        if follow and kind == heads[0]:
            js = js + by_kind["hidden"]
            parts = parts + [space.knobs[j] for j in by_kind["hidden"]]
        first = parts[0]
        for j in js:
            index[j] = len(knobs)
        if len(parts) == 1:
            knobs.append(first)
        else:
            knobs.append(TiedKnob(first.name, first.units, first.scores, first.kind,
                                  frozenset().union(*(p.members for p in parts)), first.channels_per_unit,
                                  parts=parts))
    layers = [replace(layer, attrs=dict(layer.attrs), knob_in=index.get(layer.knob_in),
                      knob_out=index.get(layer.knob_out)) for layer in space.layers]
    return Space(knobs, layers)
