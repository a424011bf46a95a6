"""Hugging Face attention that reshapes its heads back to its input width (FSMT, LED, Longformer, PVT v2).

What the family looks like: separate ``q_proj``/``k_proj``/``v_proj`` found by
`attention.find_blocks`, a forward that reads the width from its input (``tgt_len, bsz,
embed_dim = query.size()``), asserts it against a stored ``embed_dim`` and ends with
``attn_output.view(tgt_len, bsz, embed_dim)``. Such a block runs only while heads x head_dim
equals its input width: with whole heads cut and the residual width not (or the other way round)
it fails, so self-healing kept every head and the hidden width whole (FSMT: 0% removed).

How to cut: as every block whose config derives head_dim from the hidden size, by whole heads
with the hidden width losing heads x head_dim (uniform.py), but both in the same pass: the heads'
cut cannot be checked against the masked model with the hidden width already cut, so it is
checked, like that width, by running and keeping the output shapes (cut/heal.py's loose steps).
Which blocks are so is seen by trial, not guessed: while the graph is traced, `Probe` runs each
block once more with one head removed from a copy of its weights, and once with its input width
narrowed as much too (with the block's other layers on that width: PVT v2 reduces its keys'
input by a conv and a LayerNorm of the input width); a block that breaks the first way and runs
the second is one.
The stored ``embed_dim`` is then set from the new sizes (`hf_attention.restate_embed_dim`).
"""

from __future__ import annotations

import torch
from torch import nn

from . import hf_attention
from .block_calls import BlockCalls

_COUNTS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "heads", "nheads",
           "num_key_value_heads", "num_kv_heads", "n_kv_heads", "kv_heads", "num_key_value_groups",
           "all_head_size", "inner_dim", "split_size")
_WIDTHS = ("embed_dim",)  # the input width a block stores (and FSMT asserts), restated after a cut


class Probe:
    """While the graph is traced: note each Hugging Face block's input, then try it a head fewer."""

    def __init__(self, model: nn.Module) -> None:
        from .attention import find_blocks  # attention.py imports the registry, which imports this file

        self.tied: set[str] = set()  # names of the blocks that break a head fewer, after close()
        self.blocks = [b for b in find_blocks(model) if hf_attention._from_transformers(b.module)
                       and not b.fused and not b.locked and b.units > 1 and _square(b.q)]
        for block in self.blocks:  # (the trace finds the output projection through the graph later)
            block.out = _out_child(block)
        # A block whose output projection lies outside it (BERT's self-attention) gives heads x
        # head_dim outputs: a head fewer changes its output shape whatever it reads. It is probed
        # only where it stores its input width (Longformer's ``embed_dim``, asserted and reshaped to).
        self.blocks = [b for b in self.blocks if b.out is not None or _stores_width(b)]
        self.calls = BlockCalls(b.module for b in self.blocks)

    def close(self) -> None:
        self.calls.close()
        for block in self.blocks:
            call = self.calls.of(block.module)
            if call is not None and _reads_its_input_width(block, *call):
                self.tied.add(block.name)
        self.calls.clear()


def _reads_its_input_width(block, args: tuple, kwargs: dict, shape: torch.Size) -> bool:
    """The block breaks a head fewer, and runs a head fewer when its input is that much narrower
    too. A block that breaks either way (Swin's per-head position bias, which the probe leaves
    whole) breaks for another reason: its heads are cut and checked as every block's."""
    return (not _runs_a_head_fewer(block, args, kwargs, shape)
            and _runs_a_head_fewer(block, args, kwargs, shape, narrow=True))


_OUT = ("out_proj", "o_proj", "dense", "out", "proj", "c_proj")


def _out_child(block) -> nn.Module | None:
    width = block.q.weight.shape[0]
    return next((m for m in (getattr(block.module, n, None) for n in _OUT)
                 if isinstance(m, nn.Linear) and m.in_features == width), None)


def _stores_width(block) -> bool:
    return getattr(block.module, "embed_dim", None) == block.q.weight.shape[1]


def _square(q: nn.Module) -> bool:
    weight = getattr(q, "weight", None)
    return isinstance(q, nn.Linear) and weight.shape[0] == weight.shape[1]


def _runs_a_head_fewer(block, args: tuple, kwargs: dict, shape: torch.Size, *, narrow: bool = False) -> bool:
    """With unit 0 removed (its q, k, v rows and out columns), does the block still give ``shape``?
    With ``narrow``, the input width loses as much too (the q, k, v columns, the out rows and the
    last dim of every input that is that wide) and the output's last dim is expected that much less.

    The block runs once on sliced weights swapped in; everything is put back as it was after.
    """
    from .attention import cuts

    module = block.module
    # A key/value cache the real forward already wrote to would be appended to at the old widths.
    kwargs = {k: None if type(v).__name__.endswith("Cache") else v for k, v in kwargs.items()}
    layers = [c for c in cuts(block, [0]) if c[0] is not None]  # no output projection inside: heads out
    width = block.q.weight.shape[1]
    step = len(layers[0][2])  # one head's rows of q
    if narrow or block.out is None:  # a block that gives its heads is a head narrower either way
        shape = torch.Size((*shape[:-1], shape[-1] - step))
    norms: list[nn.LayerNorm] = []
    if narrow:
        cut = list(range(step))  # any head_dim columns of the input width
        layers = layers + [(m, "in" if dim == "out" else "out", cut) for m, dim, _ in layers]
        inner, norms = _on_the_width(module, {id(m) for m, _, _ in layers}, width)
        layers += [(m, dim, cut) for m in inner for dim in ("out", "in")]
        thin = lambda v: v[..., step:] if _is_wide(v, width) else v  # noqa: E731
        args, kwargs = tuple(thin(a) for a in args), {k: thin(v) for k, v in kwargs.items()}
    saved = {m: (m.weight, m.bias) for m, _, _ in layers + [(n, None, None) for n in norms]}
    shapes = {n: n.normalized_shape for n in norms}
    counts = {n: getattr(module, n) for n in _COUNTS if isinstance(getattr(module, n, None), int)}
    widths = {n: getattr(module, n) for n in _WIDTHS if narrow and getattr(module, n, None) == width}
    try:
        with torch.no_grad():
            for layer, dim, removed in layers:
                axis = 0 if dim == "out" else 1
                keep = torch.tensor([i for i in range(layer.weight.shape[axis]) if i not in set(removed)])
                layer.weight = nn.Parameter(layer.weight.index_select(axis, keep))
                if dim == "out" and layer.bias is not None:
                    layer.bias = nn.Parameter(layer.bias.index_select(0, keep))
            for norm in norms:
                norm.weight, norm.bias = (None if t is None else nn.Parameter(t[step:]) for t in (norm.weight, norm.bias))
                norm.normalized_shape = (width - step,)
            fewer = (block.units - 1) / block.units
            for name, value in counts.items():
                if name != "num_key_value_groups":
                    setattr(module, name, int(value * fewer))
            for name in widths:  # what `hf_attention.restate_embed_dim` would set
                setattr(module, name, width - step)
            got = module(*args, **kwargs)
        first = got if isinstance(got, torch.Tensor) else got[0]
        return first.shape == shape
    except Exception:  # noqa: BLE001 - any failure means the forward reads its input width
        return False
    finally:
        for layer, (weight, bias) in saved.items():
            layer.weight, layer.bias = weight, bias
        for name, value in (*counts.items(), *widths.items()):
            setattr(module, name, value)
        for norm, shape in shapes.items():
            norm.normalized_shape = shape


def _on_the_width(module: nn.Module, skip: set[int], width: int) -> tuple[list[nn.Module], list[nn.LayerNorm]]:
    """The block's other layers from its input width to itself (PVT v2's spatial-reduction conv
    and its LayerNorm before the keys and values), narrowed with the input in the probe."""
    layers, norms = [], []
    for m in module.modules():
        if id(m) in skip or m is module:
            continue
        if isinstance(m, nn.Linear) and m.in_features == m.out_features == width:
            layers.append(m)
        elif isinstance(m, nn.modules.conv._ConvNd) and m.in_channels == m.out_channels == width and m.groups == 1:
            layers.append(m)
        elif isinstance(m, nn.LayerNorm) and tuple(m.normalized_shape) == (width,):
            norms.append(m)
    return layers, norms


def _is_wide(value, width: int) -> bool:
    """A hidden-state input: a float tensor of two dims or more whose last one is ``width``."""
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() >= 2 and value.shape[-1] == width
