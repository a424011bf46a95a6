"""Attention blocks: finding them, ranking whole heads, cutting heads, fixing the attributes forward reads.

Heads are cut inside each block (query/key/value rows and the output projection's columns), never
by torch-pruning's width groups: a head is a unit only together with its ``head_dim`` rows in q, k
and v, and keeping ``head_dim`` unchanged keeps the attention scale exact. With grouped-query
attention the unit is a key/value group: one key/value head together with the query heads that
read it, so ``num_key_value_groups`` stays valid.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from torch import nn

from . import hf_attention, registry
from .tied_attention import is_tied
from .rows import is_linear_like, out_rows, powered_sums, slice_linear_in, slice_linear_out

_Q = ("q_proj", "query", "q", "to_q", "wq", "q_lin")
_K = ("k_proj", "key", "k", "to_k", "wk", "k_lin")
_V = ("v_proj", "value", "v", "to_v", "wv", "v_lin")
_QKV = ("qkv", "c_attn", "Wqkv", "qkv_proj", "in_proj", "query_key_value", "to_qkv")
_HEADS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "heads", "nheads")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "kv_heads")
_HEAD_DIM = ("head_dim", "attention_head_size", "d_head", "dim_head", "head_size")
_WIDTH = ("all_head_size", "inner_dim", "split_size")  # q width = heads * head_dim


@dataclass
class AttentionBlock:
    """One attention block shrink cuts by whole heads.

    Attributes:
        name: qualified name of the module holding q/k/v and the head counts.
        module: that module.
        q, k, v: the projection layers (one fused layer appears three times).
        out: the output projection whose input columns follow the heads, found through the graph.
        fused: q, k and v are one layer laid out [q | k | v] along its outputs (k and v are
            ``num_kv_heads * head_dim`` rows each under grouped-query attention).
        num_heads, num_kv_heads, head_dim: as built.
        locked: why its heads cannot be cut (e.g. ALiBi slopes per head), or None.
        interleaved: a fused layer laid out per head, [head, (q, k, v), head_dim] (GPT-NeoX),
            instead of [q | k | v].
        shares: blocks with the same non-empty key must keep the same heads (T5's stack adds its
            first layer's position bias in every layer); ``partners`` lists them, this one included.
        queries: other query projections as wide as q that read the same input against the same
            keys (LUKE's entity-aware ``w2e_query``/``e2w_query``/``e2e_query``): they lose q's rows
            on a heads cut and q's input columns on a width cut (`follow_q_columns`).
    """

    name: str
    module: nn.Module
    q: nn.Module
    k: nn.Module
    v: nn.Module
    out: nn.Module | None
    fused: bool
    num_heads: int
    num_kv_heads: int
    head_dim: int
    locked: str | None = None
    interleaved: bool = False
    shares: str = ""
    partners: list = field(default_factory=list)
    queries: list = field(default_factory=list)

    @property
    def units(self) -> int:
        """Units that can be removed: heads, or key/value groups under grouped-query attention."""
        return self.num_kv_heads

    @property
    def heads_per_unit(self) -> int:
        return self.num_heads // self.num_kv_heads

    def producers(self) -> list[nn.Module]:
        return [self.q] if self.fused else [self.q, self.k, self.v, *self.queries]


def _attr(module: nn.Module, names: tuple[str, ...]) -> int | None:
    config = getattr(module, "config", None)
    for owner in (module, config):
        for name in names:
            value = getattr(owner, name, None) if owner is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _child(module: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module) and is_linear_like(child):
            return child
    return None


def find_blocks(model: nn.Module, tied: Collection[nn.Module] | None = None) -> list[AttentionBlock]:
    """Modules that hold q/k/v projections (separate or fused) and a head count.

    ``tied``: the blocks cut by head dims with their input width instead (tied_attention.py; a
    trace's probe knows which of that layout run with a head fewer); by default all of that layout.
    """
    blocks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            continue  # its heads are tied to the residual width; handled as a width group
        if (module in tied) if tied is not None else is_tied(module):
            continue  # heads x head_dim is the input width: tied_attention.py cuts head dims
        heads = _attr(module, _HEADS)
        if heads is None:
            continue
        q, k, v = _child(module, _Q), _child(module, _K), _child(module, _V)
        fused = q is None and k is None and v is None
        if fused:
            q = k = v = _child(module, _QKV)
        if q is None or k is None or v is None:
            continue
        kv_heads = _attr(module, _KV_HEADS) or heads
        head_dim = _attr(module, _HEAD_DIM) or _units(q) // (heads + 2 * kv_heads if fused else heads)
        rows = (heads + 2 * kv_heads) * head_dim if fused else heads * head_dim
        if rows != _units(q) or (not fused and _units(k) != kv_heads * head_dim):
            continue  # layout we do not understand: leave it to the width groups
        if heads % kv_heads:
            continue
        block = AttentionBlock(name, module, q, k, v, None, fused, heads, kv_heads, head_dim)
        block.locked = hf_attention.locked(module, heads)
        block.shares = registry.shared_heads(name, module)
        block.interleaved = fused and hf_attention.interleaved(module)
        block.queries = [] if fused else hf_attention.queries(module, q)
        blocks.append(block)
    # Blocks that must keep the same heads (T5's stack reuses its first layer's bias) rank them together.
    for block in blocks:
        if block.shares:
            block.partners = [b for b in blocks if b.shares == block.shares and b.units == block.units]
    return blocks


def _units(layer: nn.Module) -> int:
    return out_rows(layer).shape[0]


def _rows_of_unit(block: AttentionBlock, unit: int) -> dict[str, list[int]]:
    """Output rows of q, k, v (by role) that belong to one removable unit."""
    d, r = block.head_dim, block.heads_per_unit
    q_rows = list(range(unit * r * d, (unit + 1) * r * d))
    kv_rows = list(range(unit * d, (unit + 1) * d))
    return {"q": q_rows, "k": kv_rows, "v": kv_rows}


def unit_scores(block: AttentionBlock, p: int) -> torch.Tensor:
    """Lp norm of each unit's q, k and v rows taken together (a head's own weights).

    Blocks that must keep the same heads (``partners``) share one score: the sum of theirs, so
    every one of them ranks its heads alike.
    """
    if len(block.partners) > 1:
        return sum(_own_scores(b, p) for b in block.partners)
    return _own_scores(block, p)


def _own_scores(block: AttentionBlock, p: int) -> torch.Tensor:
    """`unit_scores` of one block on its own.

    A unit's rows are contiguous in each of q, k and v (see `_rows_of_unit`), so each role's
    rows reshape to [units, rows per unit * fan_in] and are summed at once.
    """
    if block.interleaved:  # a head's q, k and v rows are one contiguous run of 3 * head_dim rows
        w = out_rows(block.q)[: block.units * 3 * block.head_dim]
        return powered_sums(w, p).view(block.units, -1).sum(dim=1).pow(1.0 / p).float()
    total = torch.zeros(block.units, dtype=torch.float64)
    roles = [(*_role_layer(block, role), role) for role in ("q", "k", "v")] + [(m, 0, "q") for m in block.queries]
    for layer, offset, role in roles:
        per = len(_rows_of_unit(block, 0)[role])
        w = out_rows(layer)[offset: offset + block.units * per]
        total += powered_sums(w, p).view(block.units, -1).sum(dim=1)
    return total.pow(1.0 / p).float()


def _role_layer(block: AttentionBlock, role: str) -> tuple[nn.Module, int]:
    if block.fused:
        width, kv = block.num_heads * block.head_dim, block.num_kv_heads * block.head_dim
        return block.q, {"q": 0, "k": width, "v": width + kv}[role]
    return {"q": block.q, "k": block.k, "v": block.v}[role], 0


def cuts(block: AttentionBlock, units: list[int]) -> list[tuple[nn.Module, str, list[int]]]:
    """The (layer, "out"/"in", removed indices) cuts that remove ``units`` from the block."""
    removed = {role: [] for role in ("q", "k", "v")}
    for u in sorted(set(units)):
        for role, rows in _rows_of_unit(block, u).items():
            removed[role].extend(rows)
    if block.interleaved:
        run = 3 * block.head_dim
        fused = [i for u in sorted(set(units)) for i in range(u * run, (u + 1) * run)]
        layer_cuts = [(block.q, "out", fused)]
    elif block.fused:
        width, kv = block.num_heads * block.head_dim, block.num_kv_heads * block.head_dim
        fused = removed["q"] + [width + i for i in removed["k"]] + [width + kv + i for i in removed["v"]]
        layer_cuts = [(block.q, "out", fused)]
    else:
        layer_cuts = [(getattr(block, role), "out", removed[role]) for role in ("q", "k", "v")]
        layer_cuts += [(m, "out", removed["q"]) for m in block.queries]  # LUKE's entity queries: q's heads
    # The output projection reads the concatenated heads: the same rows as q.
    return layer_cuts + [(block.out, "in", removed["q"])]


def follow_q_columns(block: AttentionBlock, kept: list[int]) -> list[tuple[nn.Module, list[int]]]:
    """Cut the input columns of the block's other queries that the forward never ran (LUKE's entity
    queries when no entities are passed, so no width group holds them) to ``kept``, the columns q
    kept; returns (layer, removed columns) for each one cut."""
    done = []
    for layer in block.queries:
        n = out_rows(layer).shape[1]
        if n == out_rows(block.q).shape[1] or n <= max(kept, default=-1):
            continue  # already as wide as q (a width group cut it), or not q's width before
        done.append((layer, [i for i in range(n) if i not in set(kept)]))
        slice_linear_in(layer, kept)
    return done


def remove_units(block: AttentionBlock, units: list[int]) -> None:
    """Cut whole heads (or key/value groups) ``units`` from the block and update its attributes."""
    if not units:
        return
    for layer, dim, removed in cuts(block, units):
        n = out_rows(layer).shape[0] if dim == "out" else out_rows(layer).shape[1]
        keep = [i for i in range(n) if i not in set(removed)]
        (slice_linear_out if dim == "out" else slice_linear_in)(layer, keep)
    r = block.heads_per_unit
    registry.cut_heads(block.module, [u * r + i for u in range(block.units) if u not in set(units) for i in range(r)])
    kept_units = block.units - len(set(units))
    block.num_heads = kept_units * block.heads_per_unit
    block.num_kv_heads = kept_units
    _set_attributes(block)


def _set_attributes(block: AttentionBlock) -> None:
    """Every head-count attribute forward may read, set on the block itself.

    Hugging Face configs are shared by all layers, so they are left alone: the blocks' own
    attributes (``num_key_value_groups``, ``split_size``, ...) are what their forward reads.
    """
    values = {name: block.num_heads for name in _HEADS}
    values.update({name: block.num_kv_heads for name in _KV_HEADS})
    values.update({name: block.num_heads * block.head_dim for name in _WIDTH})
    values["num_key_value_groups"] = block.heads_per_unit
    for name, value in values.items():
        if isinstance(getattr(block.module, name, None), int):
            setattr(block.module, name, value)
