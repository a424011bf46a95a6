"""Attention whose forward reshapes the heads back to the block's *input* width (timm, nanoGPT, Swin, Twins).

What the family looks like: one fused ``qkv`` Linear [3C, C] laid out [q | k | v], each part
[heads, head_dim], an output projection [C, C], a head count attribute, and a forward that
reads C from its input, not from an attribute:

- timm ``Attention``: ``qkv.reshape(B, N, 3, num_heads, head_dim)`` and ``x.reshape(B, N, C)``
  with ``B, N, C = x.shape``; ``head_dim`` and the float ``scale`` are stored attributes.
- nanoGPT ``CausalSelfAttention``: ``c_attn(x).split(self.n_embd, dim=2)``, then
  ``view(B, T, n_head, C // n_head)`` and ``view(B, T, C)``; the scale is ``1/sqrt(k.size(-1))``.
- Swin ``WindowAttention``: ``reshape(B_, N, 3, num_heads, C // num_heads)``; heads index a
  relative-position bias table, so the head count must stay.
- CaiT/XCiT ``ClassAttn``: separate ``q``, ``k``, ``v`` Linear layers [C, C] and
  ``reshape(B, N, num_heads, C // num_heads)`` (probed like the fused ones); CaiT's talking heads
  (``proj_l``, ``proj_w`` mix the heads) and XCiT's per-head temperature keep the head count too.
- ConViT's ``GPSA``: fused ``qk`` [2C, C] laid out [q | k], separate ``v`` [C, C], both reshaped
  with ``C // num_heads``; its per-head position scores and gates keep the head count.
- Twins' ``GlobalSubSampleAttn`` and PVT's SRA: separate ``q`` and fused ``kv`` (and a strided
  ``sr`` conv whose output width is C), recognised by their layout (subsample_attention.py), not probed.
- Hugging Face BLOOM's ``BloomAttention``: fused ``query_key_value`` [3C, C] laid out per head,
  [heads, (q, k, v), head_dim], and ``dense`` [C, C]; ``head_dim = hidden_size // n_head`` is
  derived from the config, and the ALiBi slopes from the head count, which therefore stays. Its
  FFN is 4 x C (uniform.py's follow-the-hidden-size rule narrows it with C). The stored
  ``inv_norm_factor`` is 1/sqrt(head_dim), recomputed from the new config on reload: it is set
  to 1/sqrt(new) and the query rows are rescaled. Recognised by its type, not probed.

Whether a block reads its input width is seen by trial, not guessed: while the graph is traced,
`Probe` removes one whole head from a copy of each candidate block and runs it on the input it
got. A block that still runs with an unchanged output shape (``reshape(B, N, -1)``) is left to
attention.py, which cuts whole heads; one that breaks belongs here.

So heads x head_dim must equal the block's input width C, a residual width cut elsewhere. How to
cut: the residual group loses a multiple of ``num_heads`` channels (`multiple`), and every head
loses as many of its own dims (`dim_steps`: the lowest-norm q/k/v dims of each head), which keeps
``heads * head_dim == C``, the head count (and Swin's bias table) intact. The attributes the
forward reads are set from the new sizes: ``head_dim`` (timm), ``n_embd`` (nanoGPT's split size).
Where the scale is computed from ``head_dim`` (nanoGPT; timm with ``fused_attn``, whose
``scaled_dot_product_attention`` ignores the stored scale), the query rows are multiplied by
sqrt(new/old) so that every attention score stays what it was with the removed dims masked.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from . import eva, subsample_attention
from .block_calls import BlockCalls

_QKV = ("qkv", "c_attn", "Wqkv", "in_proj", "to_qkv")  # to_qkv, merge: torchvision's MaxViT
_OUT = ("proj", "c_proj", "out_proj", "o_proj", "merge")
_HEADS = ("num_heads", "n_head", "n_heads", "heads")
# attributes equal to C that a forward may read as a size (timm: attn_dim; BLOOM: hidden_size, split_size)
_WIDTH = ("n_embd", "embed_dim", "dim", "attn_dim", "hidden_size", "split_size")


@dataclass
class TiedBlock:
    """An attention block whose heads x head_dim is tied to its input width.

    Attributes:
        name: qualified name of the block; module: the block.
        qkv, proj: the fused projection and the output projection.
        num_heads: head count (never changed).
        kv: with separate q and fused kv (Twins, PVT; subsample_attention.py): ``qkv`` is then q
            [C, C] and ``kv`` [2C, C]; None for a fused [q | k | v] layer.
        sr, norm: the spatial reduction before kv (a conv whose output width is C) and its LayerNorm.
        k, v: separate key and value projections [C, C] (CaiT's class attention; ``qkv`` is q), or None.
            With ``v`` but no ``k`` (ConViT's GPSA), ``qkv`` is the fused [q | k] layer [2C, C].
    """

    name: str
    module: nn.Module
    qkv: nn.Linear
    proj: nn.Linear
    num_heads: int
    kv: nn.Linear | None = None
    sr: nn.Conv2d | None = None
    norm: nn.LayerNorm | None = None
    k: nn.Linear | None = None
    v: nn.Linear | None = None
    per_head: bool = False  # fused qkv laid out [heads, (q, k, v), head_dim] (BLOOM), not [q | k | v]

    @property
    def width(self) -> int:
        if self.kv is None and self.v is None:
            return self.qkv.out_features // 3
        return self.qkv.out_features // 2 if self._fused_qk else self.qkv.out_features

    @property
    def _fused_qk(self) -> bool:
        return self.v is not None and self.k is None

    def layers(self) -> list[nn.Module]:
        """The layers whose rows the block cuts itself (never roots of a width group)."""
        return [m for m in (self.qkv, self.kv, self.sr, self.k, self.v) if m is not None]

    def head_rows(self, dims) -> list[tuple[nn.Linear, list[int]]]:
        """The rows holding head dims ``dims`` (h * head_dim + d), per layer: q, k and v."""
        c = self.width
        if self._fused_qk:
            return [(self.qkv, [s * c + i for s in range(2) for i in dims]), (self.v, list(dims))]
        if self.v is not None:
            return [(m, list(dims)) for m in (self.qkv, self.k, self.v)]
        if self.kv is not None:
            return [(self.qkv, list(dims)), (self.kv, [s * c + i for s in range(2) for i in dims])]
        if self.per_head:
            d = self.head_dim
            return [(self.qkv, sorted((i // d) * 3 * d + s * d + i % d for s in range(3) for i in dims))]
        return [(self.qkv, [s * c + i for s in range(3) for i in dims])]

    def query_rows(self) -> list[int]:
        """The rows of ``qkv`` that hold the queries."""
        if self.per_head:
            d = self.head_dim
            return [h * 3 * d + i for h in range(self.num_heads) for i in range(d)]
        return list(range(self.width))

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


def _find(module: nn.Module, names: tuple[str, ...]):
    for name in names:
        value = getattr(module, name, None)
        if value is not None:
            return value
    return None


def as_tied(name: str, module: nn.Module, *, cut: bool = False) -> TiedBlock | None:
    """The block, if ``module`` looks like this family (Hugging Face blocks carry a config: not ours).

    ``cut``: the block's input width may already have been narrowed (replaying a plan's steps).
    """
    if _is_bloom(module):
        return _bloom(name, module, cut)
    if hasattr(module, "config") or isinstance(module, nn.MultiheadAttention) or eva.matches(module):
        return None  # EVA's rotary table fixes head_dim: whole heads are cut (eva.py)
    found = subsample_attention.layers(module, cut=cut)
    if found is not None:
        q, kv, proj, sr, norm = found
        return TiedBlock(name, module, q, proj, module.num_heads, kv, sr, norm)
    qkv, proj, heads = _find(module, _QKV), _find(module, _OUT), _find(module, _HEADS)
    if qkv is None:
        return _qk_and_v(name, module, proj, heads, cut) or _separate(name, module, proj, heads, cut)
    if type(qkv) is not nn.Linear or not isinstance(proj, nn.Linear) or not isinstance(heads, int):
        return None
    if not cut and proj.out_features != qkv.in_features:
        return None  # the output projection writes back to the input width
    c = qkv.out_features // 3 if cut else qkv.in_features
    if qkv.out_features != 3 * c or proj.in_features != c or c % heads:
        return None
    return TiedBlock(name, module, qkv, proj, heads)


def _is_bloom(module: nn.Module) -> bool:
    return type(module).__name__ == "BloomAttention" and type(module).__module__.startswith("transformers.")


def _bloom(name: str, module: nn.Module, cut: bool) -> TiedBlock | None:
    qkv, proj, heads = getattr(module, "query_key_value", None), getattr(module, "dense", None), module.num_heads
    if type(qkv) is not nn.Linear or type(proj) is not nn.Linear or not isinstance(heads, int):
        return None
    c = qkv.out_features // 3
    if qkv.out_features != 3 * c or proj.in_features != c or c % heads or (not cut and qkv.in_features != c):
        return None
    return TiedBlock(name, module, qkv, proj, heads, per_head=True)


def _separate(name: str, module: nn.Module, proj, heads, cut: bool) -> TiedBlock | None:
    """A block with separate q, k and v [C, C] read from the input width (CaiT's class attention)."""
    q, k, v = (getattr(module, n, None) for n in ("q", "k", "v"))
    if not all(type(m) is nn.Linear for m in (q, k, v)) or not isinstance(proj, nn.Linear):
        return None
    if not isinstance(heads, int) or isinstance(heads, bool):
        return None
    c = q.out_features
    if k.out_features != c or v.out_features != c or proj.in_features != c or c % heads:
        return None
    if len({q.in_features, k.in_features, v.in_features}) > 1:
        return None
    if not cut and not (q.in_features == c == proj.out_features):
        return None  # heads x head_dim is the input width, and proj writes it back
    return TiedBlock(name, module, q, proj, heads, k=k, v=v)


def _qk_and_v(name: str, module: nn.Module, proj, heads, cut: bool) -> TiedBlock | None:
    """A block with fused ``qk`` [2C, C] and separate ``v`` [C, C] read from the input width (ConViT's GPSA)."""
    qk, v = getattr(module, "qk", None), getattr(module, "v", None)
    if type(qk) is not nn.Linear or type(v) is not nn.Linear or not isinstance(proj, nn.Linear):
        return None
    if not isinstance(heads, int) or isinstance(heads, bool):
        return None
    c = v.out_features
    if qk.out_features != 2 * c or proj.in_features != c or c % heads or qk.in_features != v.in_features:
        return None
    if not cut and not (v.in_features == c == proj.out_features):
        return None
    return TiedBlock(name, module, qk, proj, heads, v=v)


def find(model: nn.Module, cuttable: Collection[nn.Module] = ()) -> list[TiedBlock]:
    """The blocks of this layout, less those a probe saw running with one head fewer (``cuttable``:
    they are cut by whole heads instead)."""
    return [b for n, m in model.named_modules() if (b := as_tied(n, m)) is not None and m not in cuttable]


def is_tied(module: nn.Module) -> bool:
    return as_tied("", module) is not None


class Probe:
    """While the graph is traced: note each candidate block's input and output shape, then try it
    with one head fewer."""

    def __init__(self, model: nn.Module) -> None:
        self.cuttable: set[nn.Module] = set()  # blocks that ran with one head fewer, after close()
        self._model = model
        # Separate q and kv (subsample_attention.py) read their input width by construction: not probed.
        self.blocks = [b for b in find(model) if b.kv is None and not b.per_head]
        self.calls = BlockCalls(b.module for b in self.blocks)
        layers = {id(b.qkv.weight): b.qkv for b in self.blocks if _bias_parts(b.module)}
        self._linear = _QkvAsLayer(layers) if layers else None  # a mode slows every op: only where needed
        if self._linear is not None:
            self._linear.__enter__()

    def close(self) -> None:
        if self._linear is not None:
            self._linear.__exit__(None, None, None)
        self.calls.close()
        for block in self.blocks:
            call = self.calls.of(block.module)
            if call is not None and _runs_without_a_head(block, *call):
                self.cuttable.add(block.module)
        self.calls.clear()

    def tied(self) -> list[TiedBlock]:
        """The blocks still cut by head dims with their input width (after close())."""
        return find(self._model, self.cuttable)

    def owns(self) -> list[nn.Module]:
        """The fused qkv layers (q, kv and sr): their rows are cut here (per head), never as a width group."""
        return [layer for b in self.tied() for layer in b.layers()]


_BIASES = ("q_bias", "k_bias", "v_bias")


def _bias_parts(module: nn.Module) -> list[str]:
    """BEiT's separate q/k/v biases (qkv without bias, ``F.linear(x, qkv.weight, cat(q_bias, k_bias, v_bias))``)."""
    qkv = _find(module, _QKV)
    if not isinstance(qkv, nn.Linear) or qkv.bias is not None:
        return []
    return [n for n in _BIASES if isinstance(getattr(module, n, None), torch.Tensor)]


_LINEAR = F.linear  # the function itself: functional_linear.py swaps F.linear while tracing


class _QkvAsLayer(TorchFunctionMode):
    """While tracing: ``F.linear`` on a fused qkv layer's weight (BEiT passes ``qkv.weight`` with its own
    biases) runs as that layer plus the bias, so the graph sees the layer and its input width."""

    def __init__(self, layers: dict[int, nn.Linear]) -> None:
        super().__init__()
        self.layers = layers

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _LINEAR and self.layers:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            layer = self.layers.get(id(weight))
            if layer is not None:
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                out = layer(args[0] if args else kwargs["input"])
                return out if bias is None else out + bias
        return func(*args, **kwargs)


def _first(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def _runs_without_a_head(block: TiedBlock, args: tuple, kwargs: dict, shape: torch.Size) -> bool:
    """With head 0 removed (its q, k, v rows and proj columns), does the block still give ``shape``?

    The block runs once on sliced weights swapped in, then everything is put back as it was.
    """
    if block.num_heads < 2:
        return False
    proj, module = block.proj, block.module
    keep = list(range(block.head_dim, block.width))
    saved = [(m, m.weight, m.bias) for m in (*block.layers(), proj)]
    heads = {n: getattr(module, n) for n in _HEADS if isinstance(getattr(module, n, None), int)}
    try:
        with torch.no_grad():
            for layer, rows in block.head_rows(keep):
                index = torch.tensor(rows, dtype=torch.long)
                layer.weight = nn.Parameter(layer.weight.index_select(0, index))
                if layer.bias is not None:
                    layer.bias = nn.Parameter(layer.bias.index_select(0, index))
            proj.weight = nn.Parameter(proj.weight.index_select(1, torch.tensor(keep, dtype=torch.long)))
            for name in heads:
                setattr(module, name, block.num_heads - 1)
            got = module(*args, **kwargs)
        return _first(got).shape == shape
    except Exception:  # noqa: BLE001 - any failure means the forward reads the input width
        return False
    finally:
        for layer, weight, bias in saved:
            layer.weight = weight
            if bias is not None:
                layer.bias = bias
        for name, value in heads.items():
            setattr(module, name, value)


def dim_scores(block: TiedBlock, p: int) -> torch.Tensor:
    """[heads, head_dim]: Lp norm of each head dim's q, k and v rows taken together."""
    h, d = block.num_heads, block.head_dim
    if block._fused_qk:
        total = block.qkv.weight.detach().float().abs().pow(p).view(2, h, d, -1).sum(dim=(0, 3))
        return (total + block.v.weight.detach().float().abs().pow(p).view(h, d, -1).sum(dim=2)).pow(1.0 / p)
    if block.v is not None:
        return sum(m.weight.detach().float().abs().pow(p).view(h, d, -1).sum(dim=2)
                   for m in (block.qkv, block.k, block.v)).pow(1.0 / p)
    if block.kv is not None:
        total = block.qkv.weight.detach().float().abs().pow(p).view(h, d, -1).sum(dim=2)
        total += block.kv.weight.detach().float().abs().pow(p).view(2, h, d, -1).sum(dim=(0, 3))
        return total.pow(1.0 / p)
    if block.per_head:
        return block.qkv.weight.detach().float().view(h, 3, d, -1).abs().pow(p).sum(dim=(1, 3)).pow(1.0 / p)
    w = block.qkv.weight.detach().float().view(3, h, d, -1)
    return w.abs().pow(p).sum(dim=(0, 3)).pow(1.0 / p)


def dims_to_remove(block: TiedBlock, per_head: int, p: int) -> list[int]:
    """Positions h*head_dim + d (in q's coordinates) of the ``per_head`` weakest dims of each head."""
    scores = dim_scores(block, p)
    removed = []
    for h in range(block.num_heads):
        order = torch.argsort(scores[h], stable=True)[:per_head]
        removed += sorted(h * block.head_dim + int(d) for d in order)
    return removed


def to_remove(block: TiedBlock, lost: int, p: int) -> list[int]:
    """What a plan's step removes when the block's input width loses ``lost`` channels: each head's
    ``lost // num_heads`` weakest dims (`dims_to_remove`), then, with ``sr``, its ``lost`` weakest
    rows, written ``C + row`` (one index space of 2C: a plan lists an index once)."""
    dims = dims_to_remove(block, lost // block.num_heads, p)
    if block.sr is None:
        return dims
    rows = block.sr.weight.detach().float().abs().pow(p).flatten(1).sum(dim=1)
    return dims + sorted(block.width + int(i) for i in torch.argsort(rows, stable=True)[:len(dims)])


def _split(block: TiedBlock, removed: list[int]) -> tuple[list[int], list[int]]:
    """(head dims, sr rows) of a step's removed indices (see `to_remove`)."""
    c = block.width
    return [i for i in removed if i < c], [i - c for i in removed if i >= c]


def size(layer: nn.Module, dim: str) -> int:
    """The width a cut narrows: a Linear's or conv's outputs/inputs, a LayerNorm's entries."""
    if isinstance(layer, nn.LayerNorm):
        return layer.normalized_shape[0]
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels if dim == "out" else layer.in_channels
    return layer.out_features if dim == "out" else layer.in_features


def cuts(block: TiedBlock, removed: list[int]) -> list[tuple[nn.Module, str, list[int]]]:
    """The (layer, "out"/"in", removed indices) cuts: the dims in q, k and v; the same proj columns;
    with ``sr``, its rows, ``norm``'s entries and ``kv``'s columns."""
    dims, rows = _split(block, removed)
    found = [*((layer, "out", r) for layer, r in block.head_rows(dims)), (block.proj, "in", dims)]
    if block.sr is not None:
        found += [(block.sr, "out", rows), (block.norm, "out", rows), (block.kv, "in", rows)]
    return found


def _slice(layer: nn.Module, dim: str, removed: list[int]) -> None:
    """Drop ``removed`` along a layer's outputs ("out": weight rows, bias; a LayerNorm's entries) or inputs."""
    gone = set(removed)
    keep = torch.tensor([i for i in range(size(layer, dim)) if i not in gone], dtype=torch.long)
    axis = 0 if dim == "out" or isinstance(layer, nn.LayerNorm) else 1
    layer.weight = nn.Parameter(layer.weight.index_select(axis, keep).clone())
    if dim == "out" and layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.index_select(0, keep).clone())
    n = len(keep)
    if isinstance(layer, nn.LayerNorm):
        layer.normalized_shape = (n,)
    elif isinstance(layer, nn.Conv2d):
        setattr(layer, "out_channels" if dim == "out" else "in_channels", n)
    else:
        setattr(layer, "out_features" if dim == "out" else "in_features", n)


def _scale_is_computed(module: nn.Module) -> bool:
    """Does the forward compute 1/sqrt(head_dim) from the new size rather than read a stored scale?

    nanoGPT computes it from ``k.size(-1)``; timm stores ``scale`` but with ``fused_attn`` (its
    default) calls ``scaled_dot_product_attention`` without it, which uses the new head_dim.
    torchvision's MaxViT stores ``scale_factor`` (from its input width) and multiplies k by it.
    """
    if isinstance(getattr(module, "inv_norm_factor", None), float):
        return True  # BLOOM: set from the new head_dim below, as a model built from the new config has it
    scale = getattr(module, "scale", getattr(module, "scale_factor", None))
    return not isinstance(scale, float) or getattr(module, "fused_attn", False) is True


def cut_dims(block: TiedBlock, removed: list[int]) -> None:
    """Remove head dims ``removed`` (the same number from every head) and fix the attributes."""
    old_dim, c = block.head_dim, block.width
    dims, _ = _split(block, removed)
    keep = [i for i in range(c) if i not in set(dims)]
    qkv = block.qkv
    with torch.no_grad():
        for layer, dim, gone in cuts(block, removed):
            _slice(layer, dim, gone)
        index = torch.tensor(keep, dtype=torch.long)
        for name in _bias_parts(block.module):  # BEiT's q_bias, k_bias (a buffer), v_bias: the same dims
            value = getattr(block.module, name)
            if value.shape[0] == c:
                kept = value.index_select(0, index).clone()
                setattr(block.module, name, nn.Parameter(kept) if isinstance(value, nn.Parameter) else kept)
        new_dim = len(keep) // block.num_heads
        if _scale_is_computed(block.module):
            # q scaled by sqrt(new/old) keeps q.k/sqrt(new) equal to q.k/sqrt(old), the masked score.
            factor = math.sqrt(new_dim / old_dim)
            rows = torch.tensor(block.query_rows(), dtype=torch.long)  # the block's new sizes
            qkv.weight[rows] *= factor
            if qkv.bias is not None:
                qkv.bias[rows] *= factor
            if isinstance(getattr(block.module, "inv_norm_factor", None), float):
                block.module.inv_norm_factor = 1.0 / math.sqrt(new_dim)
            if "q_bias" in _bias_parts(block.module):
                block.module.q_bias *= factor
    # The attributes the forward reads: timm's reshape(B, N, 3, num_heads, head_dim); nanoGPT's
    # split(self.n_embd, dim=2). Both now equal the new input width C, which the residual cut set.
    if isinstance(getattr(block.module, "head_dim", None), int):
        block.module.head_dim = new_dim
    for name in _WIDTH:
        value = getattr(block.module, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value == c:
            setattr(block.module, name, len(keep))
