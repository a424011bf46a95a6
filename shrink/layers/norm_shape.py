"""Normalisation layers written by hand that store their width: ConvNeXt's ``LayerNorm``.

What the family looks like: a module that is no ``nn.LayerNorm`` but holds a one-dimensional
``weight`` (and ``bias``) of the channel width and a ``normalized_shape = (C,)`` it passes to
``F.layer_norm`` (facebookresearch/ConvNeXt's ``LayerNorm`` with ``data_format``, copied into
ConvNeXt-V2, SegNeXt, InternImage, many detection and segmentation repositories). The tracer sees
its weight and bias as parameters read along the channels and cuts them with the channels, but
``normalized_shape`` is a plain tuple: the next forward fails ("Expected weight to be of same
shape as normalized_shape"), and self-healing then kept every residual stream through one whole.

How to cut: as the tracer does; `finish` then sets ``normalized_shape`` to the cut weight's width.
"""

from __future__ import annotations

import torch
from torch import nn


def finish(model: nn.Module, seen: object = None) -> None:
    """Set each hand-written norm's stored ``normalized_shape`` from its cut weight."""
    for module in model.modules():
        shape, weight = getattr(module, "normalized_shape", None), getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
            continue  # (an nn.LayerNorm read only through its weights, as a pooler beside the logits is, too)
        if isinstance(shape, (tuple, list)) and len(shape) == 1 and isinstance(shape[0], int) \
                and shape[0] != weight.shape[0]:
            module.normalized_shape = type(shape)([weight.shape[0]])
        elif isinstance(shape, int) and not isinstance(shape, bool) and shape != weight.shape[0]:
            module.normalized_shape = weight.shape[0]
