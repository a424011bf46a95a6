"""Hugging Face widths stated per stage: config lists such as ResNet's and ConvNeXt's ``hidden_sizes``.

What the family looks like: the convolutional and hierarchical models (ResNet, ConvNeXt,
SegFormer, RegNet, PVT, MobileViT) give each stage its own width in a list field
(``hidden_sizes=[64, 128, 256, 512]``, ``embed_dims``, ``neck_hidden_sizes``), or a scalar outside
the transformer fields (ResNet's stem ``embedding_size``), and derive the widths inside a stage
from it: a bottleneck's inner width is ``hidden_sizes[i] // 4``, ConvNeXt's MLP is
``4 * hidden_sizes[i]``. No config field states those inner widths, so one width for the whole
model (uniform widths) kept all of them whole.

How to cut: each entry is one unit of the config. Which layers it sets is found by building the
model on the meta device (no memory) with that entry doubled and seeing whose shapes change
(`governed`). The groups it sets lose the same fraction, and their kept widths are read off one
more meta build with the entry's new value (`widths`), so that every derived width (a floor
division, a ratio) is exactly what the config will build. After the cut, `write_back` finds
the value of every entry the model's shapes now show and writes it into the config.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from .rows import out_rows

# Config lists of head counts per stage (SegFormer's, PVT's num_attention_heads), and the
# attribute names a built attention module holds its count under.
_HEAD_LISTS = ("num_attention_heads", "num_heads")
_HEAD_ATTRS = ("num_attention_heads", "num_heads")

# Config fields that may state a width: names like hidden_sizes, embed_dims, embedding_size, neck_hidden_sizes.
_NAME = re.compile(r"hidden|embed|channel|width|_dims?$|_sizes?$")
_SKIP = re.compile(r"^num_channels$|head_dim|act|depth|patch|stride|kernel|ratio|heads|image|position|vocab|"
                   r"label|layers|^num_|dropout|eps|range|window|group|scale|token|expert|rank")

# A float that scales every width (MobileNet's depth_multiplier, EfficientNet's width_coefficient;
# EfficientNet's depth_coefficient scales the layer count instead).
_MULTIPLIER = re.compile(r"^(depth_multiplier|width_multiplier|width_coefficient)$")

Entry = tuple[str, "int | None"]  # (config field, index in its list or None for a scalar)


def entries(config) -> dict[Entry, int | float]:
    """Every int config field (or int list entry) that may state a width, and every width
    multiplier, with its value."""
    found: dict[Entry, int | float] = {}
    for name, value in vars(config).items():
        if _MULTIPLIER.match(name) and isinstance(value, float) and value > 0:
            found[(name, None)] = value
            continue
        if name.startswith("_") or not _NAME.search(name) or _SKIP.search(name):
            continue
        if _is_int(value) and value > 1:
            found[(name, None)] = value
        elif isinstance(value, (list, tuple)) and value and all(_is_int(v) and v > 1 for v in value):
            found.update({(name, i): v for i, v in enumerate(value)})
    return found


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _with(config, changes: dict[Entry, int]):
    config = copy.deepcopy(config)
    for entry, value in changes.items():
        _set(config, entry, value)
    return config


def _build(model: nn.Module, changes: dict[Entry, int]) -> nn.Module | None:
    """``model``'s class built from its config with ``changes``, on the meta device (None: it refuses)."""
    try:
        with torch.device("meta"):
            return type(model)(_with(model.config, changes))
    except Exception:  # noqa: BLE001 - a family's __init__ may reject a changed config in many ways
        return None


def _shapes(model: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _set(config, entry: Entry, value: int) -> None:
    name, index = entry
    if index is None:
        setattr(config, name, value)
    else:
        values = list(getattr(config, name))
        values[index] = value
        setattr(config, name, type(getattr(config, name))(values))


def governed(model: nn.Module) -> dict[Entry, dict[str, tuple[int, ...]]]:
    """{entry: {tensor (state_dict key): the dims of it that the entry sets}}, read from the config
    alone (the model may already be cut). A conv between two stages has one dim set by each."""
    base = _build(model, {})
    if base is None:
        return {}
    before, found = _shapes(base), {}
    for entry, value in entries(model.config).items():
        fresh = _build(model, {entry: 2 * value})
        if fresh is None:
            continue
        changed = {k: tuple(d for d, (a, b) in enumerate(zip(before[k], shape)) if a != b)
                   for k, shape in _shapes(fresh).items() if k in before and len(before[k]) == len(shape)}
        changed = {k: dims for k, dims in changed.items() if dims}
        if changed:
            found[entry] = changed
    # A multiplier over widths that list entries state too (EfficientNet's width_coefficient over
    # in_channels/out_channels) is no unit of its own: the entries are, each a stage.
    listed = {k for (name, _), keys in found.items() if not _MULTIPLIER.match(name) for k in keys}
    return {e: keys for e, keys in found.items() if not _MULTIPLIER.match(e[0]) or not listed & keys.keys()}


def widths(model: nn.Module, changes: dict[Entry, int], layers: list[str], *,
           same_groups: bool = False) -> dict[str, int] | None:
    """The output width of each of ``layers`` in the model the config builds with ``changes``; None
    where it cannot be built, or with ``same_groups`` where it regroups a grouped conv (RegNet's
    ``groups_width``: a cut keeps each conv's group count)."""
    fresh = _build(model, changes)
    if fresh is None:
        return None
    convs = {n: m.groups for n, m in model.named_modules()  # depthwise convs keep one group per channel
             if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < m.out_channels}
    try:
        if same_groups and any(getattr(fresh.get_submodule(n), "groups", g) != g for n, g in convs.items()):
            return None
    except AttributeError:
        return None
    found = {}
    for name in layers:
        try:
            rows = out_rows(fresh.get_submodule(name))
        except AttributeError:  # that build has no such layer (a shortcut conv becomes an identity)
            return None
        if rows is None:
            return None
        found[name] = int(rows.shape[0])
    return found


def head_entries(model: nn.Module, blocks: list[str]) -> dict[str, Entry]:
    """{attention block (qualified name): the config list entry that sets its head count}, found by
    building with each entry set to 1 (on the meta device: the heads change no shape) and seeing
    whose count changes. A stage's heads are one unit with its width (kept hidden = heads x head_dim)."""
    config, found = model.config, {}
    lists = {name: vars(config).get(name) for name in _HEAD_LISTS}
    lists = {n: v for n, v in lists.items() if isinstance(v, (list, tuple)) and v and all(_is_int(x) for x in v)}
    base = _build(model, {}) if lists else None
    if base is None:
        return {}
    before = _head_counts(base, blocks)
    for name, value in lists.items():
        for i, v in enumerate(value):
            fresh = _build(model, {(name, i): 1}) if v > 1 else None
            if fresh is not None:
                found.update({b: (name, i) for b, n in _head_counts(fresh, blocks).items() if n != before.get(b)})
    return found


def _head_counts(model: nn.Module, blocks: list[str]) -> dict[str, int]:
    found = {}
    for block in blocks:
        try:
            module = model.get_submodule(block)
        except AttributeError:
            continue
        n = next((getattr(module, a) for a in _HEAD_ATTRS if _is_int(getattr(module, a, None))), None)
        if n is not None:
            found[block] = n
    return found


def write_heads(model: nn.Module, heads: dict[str, int]) -> None:
    """Write each stage's head count ({attention block: heads it has now}) into its config list
    entry, where every block the entry sets has that many."""
    by_entry: dict[Entry, set[int]] = {}
    for block, entry in head_entries(model, list(heads)).items():
        by_entry.setdefault(entry, set()).add(heads[block])
    for entry, counts in by_entry.items():
        if len(counts) == 1:
            _set(model.config, entry, counts.pop())


def write_back(model: nn.Module) -> None:
    """Set every entry whose layers the cut narrowed to the value that builds the model's shapes.

    Where the config does not build as it stands, because a stage's head count has been written
    and its width not yet (GLPN checks ``hidden_sizes[i] % num_attention_heads[i]``), the widths
    are found with one head per stage (head counts change no shape) and the counts put back."""
    if _build(model, {}) is None:
        lists = {n: v for n in _HEAD_LISTS if isinstance(v := vars(model.config).get(n), (list, tuple))}
        if not lists:
            return
        for name, value in lists.items():
            setattr(model.config, name, type(value)([1] * len(value)))
        try:
            _write_back(model)
        finally:
            for name, value in lists.items():
                setattr(model.config, name, value)
    else:
        _write_back(model)


def _write_back(model: nn.Module) -> None:
    base = _build(model, {})
    if base is None:
        return
    old, now, values = _shapes(base), _shapes(model), entries(model.config)
    for entry, keys in governed(model).items():
        moved = {k: dims for k, dims in keys.items() if k in now and any(now[k][d] != old[k][d] for d in dims)}
        found = {}
        for guess in _guesses(values[entry], old, now, moved):
            fresh = _build(model, {entry: guess})
            shapes = _shapes(fresh) if fresh is not None else {}
            matched = [all(k in shapes and shapes[k][d] == now[k][d] for d in dims) for k, dims in keys.items()
                       if k in now]
            if shapes and all(matched):
                found = {"all": guess}
                break
            # Every tensor the cut has moved so far matches: the rest of its unit is not cut yet (a
            # trial cuts the loosely checked steps first, and the forward may read the entry: SegFormer's
            # classifier reshapes to hidden_sizes[-1]). The last cut writes it again, matching all.
            # Per stage only: a model-wide width (MPNet's hidden_size) would follow a head's inner
            # layer cut alone (classifier.dense), and the config then describes none of the rest.
            if shapes and entry[1] is not None and all(shapes.get(k, ())[d:d + 1] == (now[k][d],) for k, dims in moved.items() for d in dims
                              if now[k][d] != old[k][d]):
                found.setdefault("moved", guess)
        if found:
            _set(model.config, entry, found.get("all", found.get("moved")))


def _guesses(value: int, old: dict, now: dict, moved: dict[str, tuple[int, ...]]) -> list[int]:
    """Candidate new values of an entry: each moved dim scaled by value / its old size (the widest
    first: a multiplier's rounding to multiples is least off there)."""
    out = []
    for k, dims in sorted(moved.items(), key=lambda kv: -max(old[kv[0]][d] for d in kv[1])):
        for d in dims:
            guess = now[k][d] * value / old[k][d]
            guess = guess if isinstance(value, float) else round(guess)
            if 0 < guess < value and guess not in out:
                out.append(guess)
    return out
