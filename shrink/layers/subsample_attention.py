"""Attention with separate ``q`` and fused ``kv`` reshaped to the input width (Twins' GSA, PVT's SRA).

What the family looks like (timm ``GlobalSubSampleAttn``): ``q`` [C, C], ``kv`` [2C, C], ``proj``
[C, C], an optional spatial reduction ``sr`` (a strided C -> C conv, then a LayerNorm ``norm``),
and a forward that reads C from its input: ``q(x).reshape(B, N, num_heads, C // num_heads)``,
``sr(x).reshape(B, C, -1)``, ``kv(x).reshape(B, -1, 2, num_heads, C // num_heads)`` and
``x.reshape(B, N, C)``.

So heads x head_dim, ``sr``'s output width and the residual width C are one width the tracer does
not see as one (left to it, ``q``, ``kv`` and ``sr`` root groups of their own and every one of
those cuts breaks the block). It is cut the way tied_attention.py cuts timm's fused-qkv attention:
the residual loses a multiple of ``num_heads`` channels, every head loses as many of its own dims
(the same positions in q, k and v, and proj's columns), and ``sr`` loses as many of its own
output channels (its weakest rows, ``norm``'s entries and ``kv``'s columns that read them). This
file says what the block looks like; tied_attention.py finds, ranks and cuts it.
"""

from __future__ import annotations

from torch import nn


def layers(module: nn.Module, *, cut: bool = False):
    """(q, kv, proj, sr or None, norm or None) of a subsampled attention block, or None.

    ``cut``: the block's input width may already have been narrowed (replaying a plan's steps);
    its own widths (q's rows, ``sr``'s output) are as built.
    """
    q, kv, proj = (getattr(module, n, None) for n in ("q", "kv", "proj"))
    heads = getattr(module, "num_heads", None)
    if not all(type(m) is nn.Linear for m in (q, kv, proj)) or not isinstance(heads, int):
        return None
    c = q.out_features
    if kv.out_features != 2 * c or proj.in_features != c or c % heads:
        return None
    if not cut and (q.in_features != c or proj.out_features != c):
        return None
    sr, norm = getattr(module, "sr", None), getattr(module, "norm", None)
    if sr is None:
        return q, kv, proj, None, None
    if type(sr) is not nn.Conv2d or sr.groups != 1 or sr.out_channels != c or kv.in_features != c:
        return None
    if not isinstance(norm, nn.LayerNorm) or tuple(norm.normalized_shape) != (c,):
        return None
    return q, kv, proj, sr, norm
