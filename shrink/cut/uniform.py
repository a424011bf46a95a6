"""Uniform widths: every layer of a kind keeps the same count of units (a standard HF config's need).

A Hugging Face config has one hidden size, one FFN width and one head count for all layers.
After `select` has chosen what goes, this pass makes each kind's count equal across its layers,
while each layer still ranks and keeps its *own* best units:

1. Group the chosen cuts by kind: attention heads; the hidden width (every group that feeds a
   query projection); the FFN (layers named like an FFN's first layer); anything else by its
   name with layer numbers removed and its width.
2. Each kind removes the mean of its layers' counts (rounded down: never more than asked);
   a kind where one layer must stay whole (a model output, ``ignore=``) stays whole everywhere,
   and so does, for a Hugging Face model, a kind its config has no field for.
3. Where the family derives the head size from the hidden size (BERT, GPT-2, ViT, ...), the
   hidden width is tied to the heads: kept hidden = kept heads x head_dim. Elsewhere the kept
   hidden width is rounded up to a multiple of the kept heads (configs validate that).
"""

from __future__ import annotations

import math
import re

from ..layers import attention, hf_config
from . import units as _units
from .graph import Traced
from .plan import Step


def _lowest(scores, n: int) -> tuple[int, ...]:
    import torch

    order = torch.argsort(scores, stable=True)
    return tuple(sorted(order[:n].tolist()))


def _group_kind(traced: Traced, group, q_names: set[str]) -> str:
    names = {m.rsplit(" (", 1)[0] for m in group.members}
    if any(f"{q} (in)" in group.members for q in q_names):
        return "hidden"
    if any(hf_config.FFN_IN.search(n) or hf_config.FFN_FUSED.search(n) for n in names | {group.root_name}):
        return f"ffn:{group.width}"
    pattern = re.sub(r"\.\d+\.", ".#.", group.root_name)  # the same layer in every block
    return f"{pattern}:{group.width}"


def equalise(traced: Traced, steps: list[Step], *, p: int) -> list[Step]:
    """``steps`` with one count of removed units per kind (see the module docstring)."""
    removed = {(s.op, s.layer): s for s in steps}
    q_names = {traced.names[b.q] for b in traced.blocks}
    kinds: dict[str, list] = {}
    # Step 1: every candidate (cut or not), by kind.
    for group in traced.groups:
        dim = "out" if traced.dg.is_out_channel_pruning_fn(group.pruning_fn) else "in"
        kinds.setdefault(_group_kind(traced, group, q_names), []).append(("group", group, dim))
    for block in traced.blocks:
        kinds.setdefault(f"heads:{block.units}", []).append(("heads", block, "heads"))
    counts = {}
    can_say = hf_config.expressible(traced.model)
    for kind, members in kinds.items():
        cut = [_removed_units(traced, op, x, removed.get((op, _name(traced, x)))) for op, x, _ in members]
        fixed = any(_whole(op, x) for op, x, _ in members)
        family = kind.split(":")[0] if kind.split(":")[0] in ("hidden", "ffn", "heads") else "other"
        counts[kind] = 0 if fixed or family not in can_say else math.floor(sum(cut) / len(cut))
    if hf_config.is_hf(traced.model):
        # One config field per kind: a kind spread over several widths (Swin's stages) stays whole.
        for family in ("hidden", "ffn", "heads"):
            ks = [k for k in counts if k.split(":")[0] == family]
            sizes = {x.units if op == "heads" else x.width for k in ks for op, x, _ in kinds[k]}
            if len(sizes) > 1:
                counts.update({k: 0 for k in ks})
    # Step 3: families whose head size is hidden size / heads.
    heads = [k for k in counts if k.startswith("heads:")]
    if "hidden" in counts and len(heads) == 1 and hf_config.head_dim_follows_hidden(traced.model):
        block = kinds[heads[0]][0][1]
        width = next(g.width for _, g, _ in kinds["hidden"])
        kept_heads = block.units - counts[heads[0]]
        kept = min(width, kept_heads * block.heads_per_unit * block.head_dim)
        if counts["hidden"] == 0 and kept < width:  # hidden cannot be cut: neither can the heads
            counts[heads[0]] = 0
        else:
            counts["hidden"] = width - kept
    elif "hidden" in counts and len(heads) == 1 and hf_config.is_hf(traced.model) and counts["hidden"]:
        # Configs check hidden_size % num_attention_heads == 0 even where head_dim is their own field.
        block = kinds[heads[0]][0][1]
        width = next(g.width for _, g, _ in kinds["hidden"])
        h = (block.units - counts[heads[0]]) * block.heads_per_unit
        counts["hidden"] = width - min(width, math.ceil((width - counts["hidden"]) / h) * h)
    out = []
    for kind, members in kinds.items():
        for op, x, dim in members:
            n = counts[kind]
            if n == 0:
                continue
            if op == "heads":
                units = _lowest(attention.unit_scores(x, p), n)
                out.append(Step("heads", x.name, "heads", units, traced.names[x.out]))
            else:
                units = _lowest(_units.unit_scores(traced, x, p), n)
                out.append(Step("group", x.root_name, dim, _units.channels(traced, x, list(units))))
    return out


def _removed_units(traced: Traced, op: str, x, step: Step | None) -> int:
    """Units a step removes: heads, or a group's units after the coupling (units.py)."""
    if step is None:
        return 0
    return len(step.removed) if op == "heads" else _units.count(traced, x, step.removed)


def _name(traced: Traced, x) -> str:
    return x.name if isinstance(x, attention.AttentionBlock) else x.root_name


def _whole(op: str, x) -> bool:
    if op == "heads":
        return bool(x.locked) or x.units <= 1
    return x.protected is not None or x.width % x.channel_groups != 0
