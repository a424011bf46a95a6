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
   hidden width is rounded up to a multiple of the kept heads (configs validate that). Attention
   whose head count must stay (BLOOM's ALiBi slopes; layers/tied_attention.py) loses head dims
   instead: the hidden width loses a multiple of the head count, every head as many dims.
"""

from __future__ import annotations

import logging
import math
import re

import torch

from ..layers import attention, hf_config, hf_lists, hf_moe
from . import experts, graph, select
from . import units as _units
from .graph import Traced
from .kinds import EXPERTS, GROUP, HEADS, GroupCut
from .plan import Step

log = logging.getLogger(__name__)


def group_kind(traced: Traced, group, q_names: set[str]) -> str:
    if any(group.has(q, "in") for q in q_names):
        return "hidden"
    # An FFN's units are the outputs of its first layer; the width it reads (a residual stream
    # where no attention block was found: XLNet) is no FFN.
    producers = {m.name for m in group.parts if m.dim == "out"}
    if any(hf_config.FFN_IN.search(n) or hf_config.FFN_FUSED.search(n) for n in producers | {group.root_name}):
        return f"ffn:{group.width}"
    pattern = re.sub(r"\.\d+\.", ".#.", group.root_name)  # the same layer in every block
    return f"{pattern}:{group.width}"


def equalise(traced: Traced, steps: list[Step], *, p: int, why: dict[str, str] | None = None) -> list[Step]:
    """``steps`` with one count of removed units per kind (see the module docstring).

    ``why``, when given, receives {group or block: reason} for each one a step cut before and
    uniform widths keep whole.
    """
    removed = {(s.kind, s.layer): s for s in steps}
    reasons: dict[str, str] = {}
    say = "uniform=True (one width per kind for all layers)"
    # Step 1: every candidate (cut or not), by kind.
    kinds = candidates(traced)
    counts = {}
    can_say = hf_config.expressible(traced.model)
    for kind, members in kinds.items():
        steps_of = [(cut, x, removed.get((cut, cut.name_of(x)))) for cut, x, _ in members]
        cut = [0 if step is None else c.count(traced, x, step) for c, x, step in steps_of]
        fixed = any(c.whole(x) for c, x, _ in members)
        family = kind.split(":")[0] if kind.split(":")[0] in ("hidden", "ffn", "heads") else "other"
        counts[kind] = 0 if fixed or family not in can_say else math.floor(sum(cut) / len(cut))
        if fixed:
            reasons[kind] = f"{say}: another layer of its kind stays whole (a model output, ignore=, one head)"
        elif family not in can_say:
            reasons[kind] = f"{say}: the Hugging Face config has no field for this width"
    if hf_config.is_hf(traced.model):
        # One config field per kind: a kind spread over several widths (Swin's stages) stays whole.
        for family in ("hidden", "ffn", "heads"):
            ks = [k for k in counts if k.split(":")[0] == family]
            sizes = {c.size(x) for k in ks for c, x, _ in kinds[k]}
            if len(sizes) > 1 and family == "ffn" and hf_config.ffn_ratio_field(traced.model):
                counts.update(_one_ratio(traced, {k: kinds[k] for k in ks}, counts))
            elif len(sizes) > 1:
                counts.update({k: 0 for k in ks})
                what = (f"derives the head counts and head sizes of layers of several sizes {sorted(sizes)} "
                        "from shared fields" if family == "heads" else
                        f"has one {family} field for layers of several sizes {sorted(sizes)}")
                reasons.update({k: f"{say}: the Hugging Face config {what}; uniform=False cuts it (save with "
                                   "shrink.save)" for k in ks})
    # Step 3: families whose head size is hidden size / heads. Counts are in units: a hidden width
    # read by a grouped conv (wav2vec2's positional conv) removes one channel per group per unit.
    heads = [k for k in counts if k.startswith("heads:")]
    per = {g.channel_groups for _, g, _ in kinds.get("hidden", ())}
    if "hidden" in counts and len(heads) == 1 and hf_config.head_dim_follows_hidden(traced.model, traced.blocks):
        block = kinds[heads[0]][0][1]
        width, c = next(g.width for _, g, _ in kinds["hidden"]), max(per)
        kept_heads = block.units - counts[heads[0]]
        kept = min(width, kept_heads * block.heads_per_unit * block.head_dim)
        if kept < width and kept in _projected_from(traced.model) and counts[heads[0]] > 0:
            counts[heads[0]] -= 1  # one head fewer cut: a hidden width equal to it drops the projection
            kept = min(width, (kept_heads + 1) * block.heads_per_unit * block.head_dim)
        if (counts["hidden"] == 0 or len(per) > 1 or kept % c) and kept < width:  # hidden cannot be cut: nor heads
            counts[heads[0]] = 0
            reasons[heads[0]] = (f"{say}: the config derives the head size from the hidden size, which stays "
                                 f"whole ({reasons.get('hidden', 'a model output or tied weight')})")
            counts["hidden"] = 0
        else:
            counts["hidden"] = (width - kept) // c
    elif "hidden" in counts and len(heads) == 1 and hf_config.is_hf(traced.model) and counts["hidden"]:
        # Configs check hidden_size % num_attention_heads == 0 even where head_dim is their own field.
        block = kinds[heads[0]][0][1]
        width, c = next(g.width for _, g, _ in kinds["hidden"]), max(per)
        step = math.lcm((block.units - counts[heads[0]]) * block.heads_per_unit, c)
        kept = min(width, math.ceil((width - counts["hidden"] * c) / step) * step)
        counts["hidden"] = (width - kept) // c if len(per) == 1 else 0
    _tied_multiple(traced, kinds, counts)
    _follow_hidden(traced, kinds, counts, reasons)
    per_group = _follow_lists(traced, kinds, counts, removed, reasons)
    out = []
    for kind, members in kinds.items():
        for cut, x, dim in members:
            n = per_group.get(cut.name_of(x), counts[kind])
            if n == 0:
                if why is not None and (cut, cut.name_of(x)) in removed:
                    why[cut.name_of(x)] = reasons.get(kind, f"{say}: the mean count over its layers is 0")
                continue
            out.append(cut.lowest(traced, x, dim, n, p))
    if "ffn" in can_say:  # every expert's FFN: one count per expert, for every block
        out += experts.equal_counts(traced.model, [s for s in steps if s.kind is EXPERTS], p=p)
    return out + select.tied_dim_steps(traced, out, p)


def _tied_readers(traced: Traced, group) -> list:
    return [b for b in traced.tied if group.has(traced.names[b.qkv], "in")]


def _tied_multiple(traced: Traced, kinds: dict[str, list], counts: dict[str, int]) -> None:
    """A hidden width read as heads x head_dim (BLOOM) loses a multiple of the head count."""
    blocks = [b for _, g, _ in kinds.get("hidden", ()) for b in _tied_readers(traced, g)]
    if not blocks or not counts.get("hidden"):
        return
    c = max(g.channel_groups for _, g, _ in kinds["hidden"])
    m = math.lcm(*(b.num_heads for b in blocks))
    m //= math.gcd(m, c)  # counts are in units of c channels
    counts["hidden"] = counts["hidden"] // m * m


# (config field, the layer projecting it up to the hidden size, built only while the two differ)
_PROJECTIONS = (("embedding_size", "embeddings_project"),  # ELECTRA
                ("entity_emb_size", "entity_embedding_dense"))  # LUKE's entity embeddings


def _projected_from(model) -> set[int]:
    """The embedding widths a config projects up to the hidden size (ELECTRA's ``embedding_size``,
    whose ``embeddings_project`` the config builds only while the two differ): a hidden width
    equal to one would drop that layer."""
    config = getattr(model, "config", None)
    hidden, found = getattr(config, "hidden_size", None), set()
    names = [n for n, _ in model.named_modules()]
    for field, layer in _PROJECTIONS:
        emb = getattr(config, field, None)
        if isinstance(emb, int) and isinstance(hidden, int) and emb != hidden and any(n.endswith(layer) for n in names):
            found.add(emb)
    return found


def _follow_hidden(traced: Traced, kinds: dict[str, list], counts: dict[str, int], reasons: dict[str, str]) -> None:
    """A width the config builds from the hidden size follows its cut, each layer ranking its own:
    a task head's inner width built as the hidden size (BERT's pooler) loses as many units, an FFN
    built as a multiple of it with no field of its own (XLM/FlauBERT: 4 x emb_dim) that many times
    as many. The head's output stays whole."""
    if not counts.get("hidden") or not hf_config.is_hf(traced.model):
        return
    width = next(g.width for _, g, _ in kinds["hidden"])
    # The hidden count is in units of c channels (a grouped conv reads it: wav2vec2's, SEW's positional
    # conv); a follower's in its own units: SEW's upsampling is hidden x s rows, s rows to a unit
    # (layers/channels_to_tokens.py), so it has as many units as the hidden width has channels.
    gone = counts["hidden"] * max(g.channel_groups for _, g, _ in kinds["hidden"])
    units = {x.root_name: _units.total(traced, x) for members in kinds.values() for c, x, _ in members
             if isinstance(c, GroupCut)}
    widths = {k: [x.root_name for _, x, _ in members] for k, members in kinds.items()
              if k.split(":")[0] not in ("hidden", "heads") and counts.get(k) == 0 and members
              and all(isinstance(c, GroupCut) and units[x.root_name] % width == 0 and not c.whole(x)
                      for c, x, _ in members)}
    follows = hf_config.follow_hidden(traced.model, [n for names in widths.values() for n in names])
    for kind, names in widths.items():
        if names and all(n in follows for n in names):
            counts[kind] = gone * (units[names[0]] // width)
            reasons.pop(kind, None)


def _follow_lists(traced: Traced, kinds: dict[str, list], counts: dict[str, int], removed: dict,
                  reasons: dict[str, str]) -> dict[str, int]:
    """Widths a Hugging Face config states per stage (layers/hf_lists.py): {group root: units to
    remove}. The groups one entry sets lose the mean fraction chosen for them, rounded down; their
    kept widths are what the config builds with the entry's new value. Entries that set one width
    together (ResNet's stem and first stage, joined by an identity shortcut) change together."""
    if not hf_config.is_hf(traced.model):
        return {}
    # The hidden width joins when the config states it per stage (SegFormer's hidden_sizes): its
    # stages' attention blocks then lose whole heads with it, head_dim kept.
    staged = len({x.width for _, x, _ in kinds.get("hidden", ())}) > 1
    open_groups = {x.root_name: (c, x) for kind, members in kinds.items()
                   if counts.get(kind) == 0 and (kind.split(":")[0] not in ("hidden", "heads")
                                                 or (kind == "hidden" and staged))
                   for c, x, _ in members if isinstance(c, GroupCut) and not c.whole(x)}
    open_blocks = {x.name: x for kind, members in kinds.items() if staged and counts.get(kind) == 0
                   for c, x, _ in members if c is HEADS and not c.whole(x)}
    kind_of = {c.name_of(x): kind for kind, members in kinds.items() for c, x, _ in members}
    if not open_groups:
        return {}
    model, values = traced.model, hf_lists.entries(traced.model.config)
    governed = hf_lists.governed(model)
    sets: dict = {}  # entry -> the roots whose width it sets (attention blocks by name)
    for entry, keys in governed.items():
        doubled = hf_lists.widths(model, {entry: 2 * values[entry]}, list(open_groups)) or {}
        sets[entry] = [n for n, w in doubled.items() if w != open_groups[n][1].width]
        sets[entry] += [n for n, b in open_blocks.items() if f"{traced.names[b.q]}.weight" in keys]
    owner = {(m.name, m.dim): n for n, (_, g) in open_groups.items() for m in g.parts}  # (layer, side) -> group
    for n, b in open_blocks.items():  # a block's rows of q, k and v and its output projection's columns
        owner.update({(traced.names[layer], "out"): n for layer in (b.q, b.k, b.v, *b.queries)})
        owner.setdefault((traced.names[b.out], "in"), n)
    for n, (_, g) in open_groups.items():  # bare parameters too (ConvNeXt's layer_scale_parameter)
        owner.update({(traced.dg._param_to_name[item.dep.target.module], "out"): n for item in g.tp_group
                      if item.dep.target.module in traced.dg._param_to_name})
    # Step 1: entries joined through the groups they touch; an entry touching a layer in no open group is out.
    parent = {e: e for e in governed}

    def root(e):
        while parent[e] != e:
            e = parent[e]
        return e

    blocked = set()
    for entry, keys in governed.items():
        for key, dims in keys.items():
            for side in _sides(model, key, dims):  # the group a tensor's dim belongs to: its layer's outputs or inputs
                group = owner.get((key.rsplit(".", 1)[0], side), owner.get((key, side)))
                setters = [e for e, roots in sets.items() if group in roots]
                if group is None or not setters:
                    blocked.add(entry)  # it also sets a width outside these groups (a residual stream, a head)
                for other in setters:
                    parent[root(other)] = root(entry)
    units: dict = {}
    for entry in governed:
        units.setdefault(root(entry), []).append(entry)
    # Step 2: each unit of entries loses the mean fraction of its groups, read back from the config.
    producers = {n: [m.name for m in g.parts if m.dim == "out" and _produces(model, m.name)] or [n]
                 for n, (_, g) in open_groups.items()}
    head_entry = hf_lists.head_entries(model, list(open_blocks)) if open_blocks else {}
    found: dict[str, int] = {}
    for unit in units.values():
        mine = sorted({n for e in unit for n in sets[e]})
        blocks = [open_blocks[n] for n in mine if n in open_blocks]
        mine = [n for n in mine if n not in open_blocks]
        if not mine or any(e in blocked for e in unit):
            continue
        shares = []
        for n in mine:
            cut, group = open_groups[n]
            step = removed.get((cut, n))
            shares.append((cut.count(traced, group, step) if step is not None else 0) / group.width)
        shares += [len(removed[(HEADS, b.name)].removed) / b.units if (HEADS, b.name) in removed else 0
                   for b in blocks]
        share = sum(shares) / len(shares)
        # a width multiplier (MobileNet's depth_multiplier) scales; a width loses whole units
        wanted = {e: v * (1 - share) if isinstance(v, float) else v - math.floor(v * share)
                  for e, v in ((e, values[e]) for e in unit)}
        choices = [{e: w if isinstance(w, float) else min(values[e], math.ceil(w / align) * align)
                    for e, w in wanted.items()}
                   for align in (1, 2, 4, 8, 16, 32)]  # a config may want multiples (RegNet: of groups_width)
        if blocks:  # whole heads: every width the unit sets scales by kept heads / heads, exactly
            scaled = _by_heads(blocks, share, {e: values[e] for e in unit})
            stage = {head_entry[b.name] for b in blocks if b.name in head_entry}
            if scaled is None or len(stage) != 1:
                continue
            choices = [{**scaled, stage.pop(): blocks[0].units - math.floor(blocks[0].units * share)}]
        done = False
        for new in choices:
            cuts = any(new[e] < values[e] for e in unit)
            kept = _kept_widths(model, new, mine, producers) if cuts else None
            heads = _kept_heads(model, traced, new, blocks) if kept else {}
            if kept and heads is not None and all(0 < kept[n] <= open_groups[n][1].width for n in mine):
                found.update({n: open_groups[n][1].width - kept[n] for n in mine})
                found.update({b.name: b.units - heads[b.name] for b in blocks})
                done = True
                break
        if not done and any(wanted[e] < values[e] for e in unit):
            said = ", ".join(f"{f}[{i}]" if i is not None else f for f, i in unit)
            for n in mine:
                reasons[kind_of[n]] = (f"uniform=True: the config sets this width through {said}, and no smaller "
                                       "value builds a model a cut can make (a build fails, or regroups a grouped "
                                       "convolution)")
    return found


def _by_heads(blocks: list, share: float, values: dict) -> dict | None:
    """The unit's entries scaled by kept heads / heads, the heads losing ``share`` (rounded down),
    or None where that cuts nothing or some entry would not scale to a whole number."""
    if len({b.units for b in blocks}) != 1:
        return None
    units = blocks[0].units
    kept = units - math.floor(units * share)
    if kept in (0, units) or any(v * kept % units for v in values.values() if not isinstance(v, float)):
        return None
    return {e: v * kept / units if isinstance(v, float) else v * kept // units for e, v in values.items()}


def _kept_heads(model, traced: Traced, changes: dict, blocks: list) -> dict[str, int] | None:
    """{block: heads the config builds with ``changes``}, read off the rows of its query, head_dim
    kept; None where some block's rows are no whole number of its heads."""
    if not blocks:
        return {}
    rows = hf_lists.widths(model, changes, [traced.names[b.q] for b in blocks])
    if rows is None:
        return None
    found = {}
    for b in blocks:
        per = b.head_dim * b.heads_per_unit
        n = rows[traced.names[b.q]]
        if n % per or not 0 < n // per < b.units:
            return None
        found[b.name] = n // per
    return found


def _produces(model, name: str) -> bool:
    try:
        return attention.out_rows(model.get_submodule(name)) is not None
    except AttributeError:
        return False


def _kept_widths(model, changes: dict, roots: list[str], producers: dict[str, list[str]]) -> dict[str, int] | None:
    """{root: the width the config builds with ``changes``} for each group, None where it cannot
    be built or where it would give a group's producers different widths (EfficientNet's stem
    conv is ``round_filters(32)`` whatever ``in_channels[0]`` says: no value of it can cut them)."""
    layers = sorted({n for r in roots for n in producers[r]})
    built = hf_lists.widths(model, changes, layers, same_groups=True)
    if built is None:
        return None
    kept = {r: {built[n] for n in producers[r]} for r in roots}
    return None if any(len(v) != 1 for v in kept.values()) else {r: v.pop() for r, v in kept.items()}


def _sides(model, key: str, dims: tuple[int, ...]) -> set[str]:
    """Which side of its layer each of a tensor's ``dims`` indexes: "out" (its units) or "in"."""
    name, _, leaf = key.rpartition(".")
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        return {"out"}
    tensor = getattr(layer, leaf, None)
    if leaf != "weight" or not isinstance(tensor, torch.Tensor) or tensor.dim() < 2:
        return {"out"}  # biases, norms' scales, bare per-channel parameters
    return {"out" if d == graph.tensor_dim(layer, True) else "in" for d in dims}


def _one_ratio(traced: Traced, kinds: dict[str, list], counts: dict[str, int]) -> dict[str, int]:
    """FFN kinds of several widths that one ratio field states (Swin's ``mlp_ratio``): each loses the
    same fraction, so that every kept width is int(new ratio x its layer's width)."""
    widths = {}  # kind -> (FFN units, layer width)
    for kind, members in kinds.items():
        layer = traced.model.get_submodule(members[0][1].root_name)
        rows = attention.out_rows(layer)
        if rows is None or rows.dim() != 2:
            return {k: 0 for k in kinds}
        widths[kind] = (int(rows.shape[0]), int(rows.shape[1]))
    cut = sum(counts[k] for k in kinds)
    fraction = cut / sum(u for u, _ in widths.values())
    units, width = min(widths.values(), key=lambda p: p[1])
    ratio = max(1, round(units * (1 - fraction))) / width  # read off the narrowest layer, as hf_config does
    return {k: u - max(1, int(ratio * w)) for k, (u, w) in widths.items()}


def candidates(traced: Traced) -> dict[str, list]:
    """{kind: [(cut kind, group or attention block, dim)]} over every candidate, cut or not."""
    q_names = {traced.names[b.q] for b in traced.blocks} | {traced.names[b.qkv] for b in traced.tied}
    kinds: dict[str, list] = {}
    for group in traced.groups:
        dim = "out" if traced.dg.is_out_channel_pruning_fn(group.pruning_fn) else "in"
        kinds.setdefault(group_kind(traced, group, q_names), []).append((GROUP, group, dim))
    for block in traced.blocks:
        kinds.setdefault(f"heads:{block.units}", []).append((HEADS, block, "heads"))
    return kinds


# Uniform widths after self-healing (heal.py): healing keeps whole the groups whose cut breaks
# the model, one layer at a time, which would leave the other layers of that kind cut and the
# widths unequal again. A kind kept whole in one layer is then kept whole in every layer.


def kinds_of(traced: Traced) -> dict[str, str]:
    """{step label (group root or attention block): kind}, read off the trace before any cut."""
    kinds = {c.name_of(x): kind for kind, members in candidates(traced).items() for c, x, _ in members}
    return {**kinds, **{name: "experts" for name, _ in hf_moe.expert_blocks(traced.model)}}


def keep_kinds_whole(outcome, kinds: dict[str, str], cut_again, *, model_is_hf: bool):
    """``outcome`` (heal.Outcome) with every kind that healing kept whole in one layer whole in all.

    Args:
        outcome: what `heal.heal` returned; ``outcome.broken`` lists the steps it kept whole.
        kinds: `kinds_of` the first trace.
        cut_again: ``steps -> Outcome``, healing ``steps`` on a fresh copy of the model.
        model_is_hf: a Hugging Face config also ties the hidden size to the head count, so where
            the config cannot describe the result, a kept-whole hidden width keeps the heads
            whole (and the other way round) too.

    Returns:
        The outcome of cutting only the kinds cut in every layer; its ``broken`` says, for each
        step left out, which layer's failure kept its kind whole.
    """
    linked = False
    for _ in range(4):  # each pass only removes steps, so this ends; 4 passes cover the linking
        whole = {kinds[b]: b for b in sorted(outcome.broken) if b in kinds}
        if linked and any(k == "hidden" or k.startswith("heads:") for k in whole):
            first = next(b for k, b in whole.items() if k == "hidden" or k.startswith("heads:"))
            whole.update({k: first for k in set(kinds.values()) if k == "hidden" or k.startswith("heads:")})
        drop = [s for s in outcome.steps if kinds.get(s.layer) in whole]
        reasons = {s.layer: _why_whole(kinds[s.layer], whole[kinds[s.layer]], outcome.broken) for s in drop}
        if not drop and model_is_hf and hf_config.check(outcome.model):
            if whole and not linked:
                linked = True
                continue
            # A layer the config builds from a width kept whole (big_bird's classifier.dense follows
            # the hidden size): the config says which; it stays whole too.
            wrong = {key.rsplit(".", 1)[0] for key in hf_config.wrong_tensors(outcome.model)}
            drop = [s for s in outcome.steps if s.layer in wrong]
            reasons = {s.layer: "kept whole so that the config describes the model (uniform=True): a model built "
                                "from the config would give it another width" for s in drop}
        if not drop:
            return outcome
        log.info("uniform widths: keeping %d more groups whole (%s)", len(drop), ", ".join(sorted(reasons)))
        again = cut_again([s for s in outcome.steps if s not in drop])
        again.broken = {**outcome.broken, **reasons, **again.broken}
        again.trials += outcome.trials
        outcome = again
    return outcome


def _why_whole(kind: str, cause: str, broken: dict[str, str]) -> str:
    what = {"hidden": "the hidden width", "ffn": "the FFN width", "experts": "the experts' FFN width"}.get(kind.split(":")[0], None)
    what = what or ("the attention heads" if kind.startswith("heads:") else f"the width of {kind.rsplit(':', 1)[0]!r}")
    return (f"kept whole so that every layer keeps one width (uniform=True): {what} could not be cut in "
            f"{cause!r} ({broken[cause]})")
