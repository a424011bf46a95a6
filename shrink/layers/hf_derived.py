"""Hugging Face configs whose width field is an input to a formula, not the width the model builds.

What the family looks like: LFM2 reads ``intermediate_size`` (``block_ff_dim``) and, while
``block_auto_adjust_ff_dim`` is on, builds ``int(2 * intermediate_size / 3)`` scaled by
``block_ffn_dim_multiplier`` and rounded up to a multiple of ``block_multiple_of`` (a default
config states 128 and builds 256). Writing the cut width into the field would have it adjusted
again on reload.

How to describe a cut: each such family has a switch under which the field is taken as it is.
When the cut narrows that kind, the switch is set so and the field is made to state the width
the layers had before the cut; `hf_config.describe` then rewrites it to the cut width like any
other field, and `hf_config.check` proves the config builds the cut model.
"""

from __future__ import annotations

from types import MappingProxyType

# {switch field: (the value under which the width field is stated as built, kind of width it governs)}
LITERAL = MappingProxyType({
    "block_auto_adjust_ff_dim": (False, "ffn"),  # LFM2
})


def state_literally(config, names: dict[str, tuple[str, ...]], before: dict[str, set[int]],
                    after: dict[str, set[int]]) -> list[str]:
    """Turn off every formula over a width field whose kind the cut narrowed; returns the switches set.

    Args:
        config: the (sub-)config that states the widths.
        names: {kind: config field names of that width} (`hf_config.FIELDS`).
        before, after: `hf_config.measure` of the model before and after the cut.
    """
    switched = []
    for switch, (literal, kind) in LITERAL.items():
        if switch not in vars(config) or getattr(config, switch) == literal:
            continue
        if len(before.get(kind, ())) != 1 or before.get(kind) == after.get(kind):
            continue  # not one width before (the config's formula derives several), or not cut
        setattr(config, switch, literal)
        width = next(iter(before[kind]))
        for name in names[kind]:
            if name in vars(config):
                setattr(config, name, width)  # what the formula built: describe() now rewrites it
        switched.append(switch)
    return switched
