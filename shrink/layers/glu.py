"""Gated widths: a fused layer split into parts that are multiplied together (GLU, gMLP, MambaOut).

What the family looks like: one Linear writes [a | g] (or more parts) and the parts meet again in a
product, ``a, g = fc1(x).chunk(2, -1); fc2(a * act(g))``, so channel j of every part is one unit.
The engine traces the coupling (torch-pruning pairs row j with row H + j) and counts units after
it (cut/units.py); that is all Phi-3's ``gate_up_proj`` needs (its config's ``intermediate_size``
is measured as half the fused rows, hf_config.FFN_FUSED). What the engine cannot see lives here:

- MambaOut's ``GatedConvBlock`` splits with sizes stored in an attribute,
  ``g, i, c = torch.split(x, self.split_indices, dim=-1)``, and a depthwise conv reads part c;
  ``fc2(act(g) * cat(i, conv(c)))``. After the cut, `finish` sets the sizes from the new layers:
  g is fc2's input width, c the conv's width, i the rest.
- gMLP's ``SpatialGatingUnit``: ``u, v = x.chunk(2, -1); v = norm(v); v = proj(v.transpose(-1, -2));
  u * v.transpose(-1, -2)``. ``proj`` is a square Linear over the *tokens*; the tracer cannot tell
  dimensions apart and couples the token count with the channels. While the graph is traced,
  `Tokens` swaps ``proj`` for an identity (it never changes a channel), so the graph sees the
  GLU with a norm on v; ``proj`` is kept whole (its width is the sequence length, fixed by the input).
"""

from __future__ import annotations

from torch import nn

_SPLIT_SIZES = "split_indices"


def _gated_conv(module: nn.Module):
    """(fc1, conv, fc2) of a MambaOut GatedConvBlock, or None."""
    sizes = getattr(module, _SPLIT_SIZES, None)
    fc1, conv, fc2 = (getattr(module, n, None) for n in ("fc1", "conv", "fc2"))
    if not (isinstance(sizes, (tuple, list)) and len(sizes) == 3 and all(isinstance(s, int) for s in sizes)):
        return None
    if not (isinstance(fc1, nn.Linear) and isinstance(conv, nn.Conv2d) and isinstance(fc2, nn.Linear)):
        return None
    return fc1, conv, fc2


def finish(model: nn.Module, seen: object = None) -> None:
    """Set each gated conv block's stored split sizes from its cut layers: (g, i, c)."""
    for module in model.modules():
        layers = _gated_conv(module)
        if layers is None:
            continue
        fc1, conv, fc2 = layers
        g, c = fc2.in_features, conv.in_channels
        if fc1.out_features == 2 * g and g >= c:  # the cut kept the parts paired: g == i + c
            setattr(module, _SPLIT_SIZES, type(getattr(module, _SPLIT_SIZES))((g, g - c, c)))


def _token_mixer(module: nn.Module) -> nn.Linear | None:
    """gMLP's spatial gating unit: a ``norm`` over channels and a square ``proj`` over tokens."""
    proj, norm = getattr(module, "proj", None), getattr(module, "norm", None)
    if type(proj) is not nn.Linear or proj.in_features != proj.out_features:
        return None
    if not isinstance(norm, nn.LayerNorm) or norm.normalized_shape[-1] == proj.in_features:
        return None
    return proj


class _Identity(nn.Module):
    def forward(self, x):
        return x


class Tokens:
    """While the graph is traced: each spatial gating unit's token projection is an identity."""

    def __init__(self, model: nn.Module) -> None:
        self._swapped = [(m, m.proj) for m in model.modules() if _token_mixer(m) is not None]
        for module, _ in self._swapped:
            module._modules["proj"] = _Identity()

    def close(self) -> None:
        for module, proj in self._swapped:
            module._modules["proj"] = proj
