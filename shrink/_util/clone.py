"""Deep copies that also work on models carrying `torch.nn.utils.prune` masks."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils import prune


def _mask_hooks(model: nn.Module):
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                yield m, hook


def clone(model: nn.Module) -> nn.Module:
    """``copy.deepcopy``, except that masked weights (computed, non-leaf tensors) are recomputed."""
    saved = [(m, h._tensor_name, m.__dict__.pop(h._tensor_name)) for m, h in _mask_hooks(model)
             if h._tensor_name in m.__dict__]
    try:
        twin = copy.deepcopy(model)
    finally:
        for m, name, value in saved:
            setattr(m, name, value)
    for m, hook in _mask_hooks(twin):
        setattr(m, hook._tensor_name, hook.apply_mask(m))
    return twin
