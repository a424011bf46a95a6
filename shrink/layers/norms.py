"""Normalisation layers without affine weights, and norms followed by an in-place activation.

What the family looks like: ``InstanceNorm``/``BatchNorm`` built with ``affine=False``,
``GroupNorm(affine=False)``, ``LayerNorm(elementwise_affine=False)``: nothing to slice but the
stored width (``num_features``, ``num_channels``, ``normalized_shape``) and, with
``track_running_stats=True``, the running mean and variance. MONAI builds every block this way
(its ``ADN``: norm, dropout, activation, often an ``inplace=True`` LeakyReLU or a PReLU with one
slope for all channels); so do diffusion U-Nets and style-transfer networks.

torch-pruning cuts these layers with their producer once it sees them in the graph, but:

1. ``F.instance_norm`` returns a view (it normalises ``x.view(1, B * C, ...)``). An in-place
   activation after it re-bases the view, so the autograd node recorded for the norm is no longer
   in the graph: the tracer never sees the norm, cuts the conv before it, and the norm keeps its
   old ``num_features`` ("expected input's size at dim=1 to match num_features (8), but got: 4").
   While the graph is traced, `Unviewed` hands on a copy of such a norm's output instead, so the
   norm stays in the graph; the values are the same.
2. torch-pruning's InstanceNorm handler slices the affine weights but not the running statistics
   of ``track_running_stats=True``; `InstanceNormPruner` slices them too (BatchNorm's handler
   already does).

How to cut: as the producer's channels; GroupNorm keeps its number of groups and loses the same
channels in every group (the engine's rule for every GroupNorm, with or without weights).
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

_INSTANCE = nn.modules.instancenorm._InstanceNorm
_NORMS = (nn.modules.batchnorm._BatchNorm, _INSTANCE, nn.GroupNorm, nn.LayerNorm)


def _copy_views(_module: nn.Module, _args, out):
    if isinstance(out, torch.Tensor) and out._is_view():
        return out.clone()  # a tensor of its own: an in-place op after it no longer re-bases the norm's node
    return None


class Unviewed:
    """While open: every norm whose output is a view hands on a copy, so the tracer keeps it in the graph."""

    def __init__(self, model: nn.Module) -> None:
        self._handles = [m.register_forward_hook(_copy_views) for m in model.modules() if isinstance(m, _NORMS)]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class InstanceNormPruner(tp.pruner.function.InstanceNormPruner):
    """torch-pruning's InstanceNorm handler, slicing the running statistics too."""

    def prune_out_channels(self, layer: nn.Module, idxs):
        if layer.track_running_stats and layer.running_mean is not None:
            gone = set(int(i) for i in idxs)
            keep = torch.tensor([i for i in range(layer.num_features) if i not in gone], dtype=torch.long)
            layer.running_mean = layer.running_mean.index_select(0, keep.to(layer.running_mean.device))
            layer.running_var = layer.running_var.index_select(0, keep.to(layer.running_var.device))
        return super().prune_out_channels(layer, idxs)

    prune_in_channels = prune_out_channels


def pruners(model: nn.Module) -> dict:
    """The InstanceNorm handler for the InstanceNorm types in ``model`` that keep running statistics."""
    return {type(m): InstanceNormPruner() for m in model.modules()
            if isinstance(m, _INSTANCE) and m.track_running_stats}
