"""Convolution and linear subclasses that do more than apply their weight: weight standardisation
(BiT's ``StdConv2d``, NFNet's ``ScaledStdConv2d``) and per-output-channel parameters of their own.

What the family looks like (timm, ``layers/std_conv.py``)::

    class ScaledStdConv2d(nn.Conv2d):
        def __init__(...):
            self.gain = nn.Parameter(torch.full((self.out_channels, 1, 1, 1), gain_init))
        def forward(self, x):
            weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                                  weight=(self.gain * self.scale).view(-1), training=True, momentum=0.)
            return F.conv2d(x, weight.reshape_as(self.weight), self.bias, ...)

Two things break a plain cut. ``gain`` holds one entry per output channel, but torch-pruning cuts
only ``weight`` and ``bias``: the cut forward fails ("weight should contain 20 elements not 40").
`extra_rows` names every such parameter or buffer (any tensor of the module's own whose first
dimension is its output width), and the engine cuts them with the rows. And the standardisation normalises each filter over
its fan-in, so removing input channels rescales what is left: a cut consumer is no longer the
original with those inputs zeroed. `transforms_weight` finds such layers by behaviour, not by
name (a plain layer's output is affine in its weight: ``y(2W) - y(W) == y(W) - y(0)``), and the
verified-cut check treats them like LayerNorm: checked for running and shapes only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

_BASES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _subclass(module: nn.Module) -> bool:
    # a parametrized layer (weight norm) is a generated subclass: layers/parametrized.py cuts it
    return isinstance(module, _BASES) and parametrize.type_before_parametrizations(module) not in _BASES


def _out_width(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def extra_rows(module: nn.Module, width: int | None = None) -> list[str]:
    """Names of the module's own tensors, besides weight and bias, with one entry per output
    channel (``width`` of them: the current output width unless given)."""
    if not _subclass(module):
        return []
    width = _out_width(module) if width is None else width
    own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    return [n for n, t in own if n not in ("weight", "bias") and t is not None and t.dim() >= 1
            and t.shape[0] == width]


def transforms_weight(module: nn.Module) -> bool:
    """Whether a conv/linear subclass's output is not affine in its weight (standardised, normed).

    Tried on a small random input, with the weight doubled and zeroed in turn (a few small forwards,
    only for conv/linear subclasses)."""
    return _subclass(module) and _not_affine(module)


def _not_affine(module: nn.Module) -> bool:
    weight = module.weight
    if isinstance(module, nn.Linear):
        shape = (2, module.in_features)
    else:
        reach = [(k - 1) * d + s for k, d, s in zip(module.kernel_size, module.dilation, module.stride)]
        shape = (1, module.in_channels, *(max(r, 4) for r in reach))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(weight.device, weight.dtype)
    outputs = []
    try:
        with torch.no_grad():
            for scale in (2.0, 1.0, 0.0):
                module.weight = nn.Parameter(weight.detach() * scale, requires_grad=weight.requires_grad)
                outputs.append(module(x).double())
    except Exception:  # a forward that cannot run alone: not provably plain
        return True
    finally:
        module.weight = weight
    y2, y1, y0 = outputs
    return not torch.allclose(y2 - y1, y1 - y0, rtol=1e-3, atol=1e-5 * float(y1.abs().max().clamp_min(1)))
