"""Attention with separate ``q`` and fused ``kv`` reshaped to the input width (Twins' GSA, PVT's SRA).

What the family looks like (timm ``GlobalSubSampleAttn``): ``q`` [C, C], ``kv`` [2C, C], ``proj``
[C, C], an optional spatial reduction ``sr`` (a strided C -> C conv, then a LayerNorm), and a
forward that reads C from its input: ``q(x).reshape(B, N, num_heads, C // num_heads)``,
``sr(x).reshape(B, C, -1)``, ``kv(x).reshape(B, -1, 2, num_heads, C // num_heads)`` and
``x.reshape(B, N, C)``.

So heads x head_dim, ``sr``'s width and the residual width C are one width the tracer does not
see as one: it makes ``q``, ``kv`` and ``sr`` roots of groups of their own, and every one of those
cuts breaks the block (Twins at ratio 0.5: dozens of failing groups, more than self-healing's
trial budget, and nothing was cut). How to cut: not inside the block. `own_layers` keeps ``q``,
``kv`` and ``sr`` from rooting groups, and `fixed` keeps the residual width that ``proj`` writes
whole, with the reason; the rest of the network (the MLPs' hidden units) is cut as usual.
"""

from __future__ import annotations

from torch import nn

REASON = "read by attention that reshapes q and kv to its input width (separate q, fused kv): kept whole"


def _layers(module: nn.Module):
    """(q, kv, proj, sr or None) of a subsampled attention block, or None."""
    q, kv, proj = (getattr(module, n, None) for n in ("q", "kv", "proj"))
    if not all(isinstance(m, nn.Linear) for m in (q, kv, proj)) or not isinstance(getattr(module, "num_heads", None), int):
        return None
    if kv.out_features != 2 * q.out_features or q.out_features != q.in_features or proj.out_features != q.in_features:
        return None
    sr = getattr(module, "sr", None)
    return q, kv, proj, sr if isinstance(sr, nn.Conv2d) else None


def own_layers(model: nn.Module) -> list[nn.Module]:
    """``q``, ``kv`` and ``sr`` of every block: never roots of a width group."""
    return [m for block in model.modules() if (found := _layers(block)) is not None
            for m in (found[0], found[1], found[3]) if m is not None]


class Found:
    """The blocks of this family in the model (nothing to watch while tracing)."""

    def __init__(self, model: nn.Module) -> None:
        self.proj = [found[2] for block in model.modules() if (found := _layers(block)) is not None]

    def close(self) -> None:
        pass


def fixed(found: Found, outputs) -> dict[nn.Module, str]:
    """The output projections: the residual width they write stays whole."""
    return {proj: REASON for proj in found.proj}
