"""Down- and upsampling blocks that store their width and assert it (diffusers' ``Downsample2D``/``Upsample2D``).

What the family looks like: a block with ints ``channels`` and ``out_channels``, a flag
``use_conv`` and a conv child (``conv``, or ``Conv2d_0`` in old checkpoints' naming) that reads
``channels`` and writes ``out_channels``; its forward starts with ``assert hidden_states.shape[1]
== self.channels`` (diffusers' 1-D and 2-D resamplers in every U-Net and VAE). The tracer cuts the
conv with its neighbours, but the ints stay: the assertion fails and self-healing kept the widths
around every resampler whole.

The same pattern in Hugging Face patch embeddings between stages (PVT's
``PvtPatchEmbeddings``): an int ``num_channels`` and a conv ``projection`` reading it; the forward
raises where the pixel values' channels differ from it, so a cut of the stage before it was
undone by self-healing and PVT compressed nothing.

How to cut: as the tracer does; `finish` then sets ``channels``/``out_channels`` (and
``num_channels``) from the conv.
"""

from __future__ import annotations

from torch import nn

_CONV_NAMES = ("conv", "Conv2d_0")


def _conv(module: nn.Module) -> nn.modules.conv._ConvNd | None:
    if not isinstance(getattr(module, "use_conv", None), bool):
        return None
    if not all(isinstance(getattr(module, n, None), int) for n in ("channels", "out_channels")):
        return None
    return next((c for c in (getattr(module, n, None) for n in _CONV_NAMES)
                 if isinstance(c, nn.modules.conv._ConvNd)), None)


def _projection(module: nn.Module) -> nn.modules.conv._ConvNd | None:
    conv = getattr(module, "projection", None)
    if isinstance(getattr(module, "num_channels", None), int) and isinstance(conv, nn.modules.conv._ConvNd):
        return conv
    return None


def finish(model: nn.Module, seen: object = None) -> None:
    """Set each resampler's stored ``channels``/``out_channels`` and each patch embedding's
    ``num_channels`` from its cut conv."""
    for module in model.modules():
        conv = _conv(module)
        if conv is not None:
            module.channels, module.out_channels = conv.in_channels, conv.out_channels
        conv = _projection(module)
        if conv is not None:
            module.num_channels = conv.in_channels
