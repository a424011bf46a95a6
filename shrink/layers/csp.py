"""CSPNet's cross stage (timm ``CrossStage3``/``CrossStage``): an expanded width split in two halves
by a stored size.

What the family looks like: ``conv_exp`` (a conv, or a ConvNormAct holding one as ``conv``) writes
``expand_chs`` channels, and the forward splits them with the stored size,
``x1, x2 = x.split(self.expand_chs // 2, dim=1)``: x1 feeds the blocks (a residual stream), x2
goes straight into the concatenation before ``conv_transition``.

The tracer maps each half's channels to their consumers, but nothing tells it that the halves must
stay equal: a cut that takes more channels from one half breaks the split (and self-healing then
kept the whole expanded width). So the halves are declared as two channel groups (`parts`): the
engine removes position j of both halves together (as it does for grouped convs), and `finish`
sets ``expand_chs`` from the cut conv. Which positions pair up does not matter for the result: any
equal-count cut of the halves is the same network with the removed channels masked.
"""

from __future__ import annotations

from torch import nn


def _expanding_conv(module: nn.Module) -> nn.Conv2d | None:
    """The conv that writes a cross stage's expanded width, or None."""
    exp, conv = getattr(module, "expand_chs", None), getattr(module, "conv_exp", None)
    if not isinstance(exp, int) or isinstance(exp, bool) or not isinstance(conv, nn.Module):
        return None
    conv = conv if isinstance(conv, nn.Conv2d) else getattr(conv, "conv", None)
    return conv if isinstance(conv, nn.Conv2d) and conv.groups == 1 else None


class Halves:
    """Before the graph is traced: note each cross stage's expanding conv (nothing to watch)."""

    def __init__(self, model: nn.Module) -> None:
        self._parts: dict[nn.Module, int] = {}  # conv_exp conv -> equal parts its outputs are split into
        for module in model.modules():
            conv = _expanding_conv(module)
            if conv is not None and conv.out_channels == module.expand_chs and module.expand_chs % 2 == 0:
                self._parts[conv] = 2

    def parts(self, module: nn.Module) -> int:
        """Equal parts a layer's outputs are split into by a stored size (1: none)."""
        return self._parts.get(module, 1)

    def close(self) -> None:
        pass


def finish(model: nn.Module, seen: object = None) -> None:
    """Set each cross stage's ``expand_chs`` from its cut expanding conv."""
    for module in model.modules():
        conv = _expanding_conv(module)
        if conv is not None and conv.out_channels % 2 == 0:
            module.expand_chs = conv.out_channels
