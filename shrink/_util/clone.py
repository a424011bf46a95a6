"""Deep copies that also work on models whose weights a forward hook computes: `torch.nn.utils.prune`
masks and the older `torch.nn.utils.weight_norm` / `spectral_norm` (their weight is a non-leaf tensor,
which ``copy.deepcopy`` refuses)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

from torch import nn
from torch.nn.utils import prune
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm


def computed_weights(model: nn.Module) -> Iterator[tuple[nn.Module, str, Callable[[nn.Module], object]]]:
    """(module, tensor name, how its hook computes it) for every weight a forward pre-hook recomputes."""
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                yield m, hook._tensor_name, hook.apply_mask
            elif isinstance(hook, WeightNorm):
                yield m, hook.name, hook.compute_weight
            elif isinstance(hook, SpectralNorm):
                yield m, hook.name, lambda module, h=hook: h.compute_weight(module, do_power_iteration=False)


def clone(model: nn.Module) -> nn.Module:
    """``copy.deepcopy``, except that hook-computed weights are left out of the copy and recomputed."""
    saved = [(m, name, m.__dict__.pop(name)) for m, name, _ in computed_weights(model) if name in m.__dict__]
    try:
        twin = copy.deepcopy(model)
    finally:
        for m, name, value in saved:
            setattr(m, name, value)
    for m, name, compute in computed_weights(twin):
        setattr(m, name, compute(m))
    return twin
