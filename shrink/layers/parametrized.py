"""Layers whose weight is computed from other tensors: weight norm, spectral norm, any parametrization.

What the family looks like (audio and GAN code: HiFi-GAN, WaveNet, EnCodec, DAC)::

    self.conv = torch.nn.utils.parametrizations.weight_norm(nn.Conv1d(c, c, 3))  # weight = g * v / ||v||
    self.conv = torch.nn.utils.weight_norm(nn.Conv1d(c, c, 3))                   # the older hook: weight_g, weight_v
    self.conv = torch.nn.utils.spectral_norm(nn.Conv2d(c, c, 3))                 # weight = weight_orig / sigma

``module.weight`` is then computed on every forward, and a cut that assigns a narrower weight
fails ("attribute 'weight' already exists") or leaves ``g``, ``v`` at the old width. Before a cut
touches such a layer, `plain_weights` folds it into the plain weight it computes now (so the cut
removes exactly the units it would mask). Weight norm is put back afterwards, exact by
construction (``g = ||w||``, ``v = w`` give the same weight), in the style the model used, so its
state_dict keeps its kind of keys and training code that expects them still runs. Other
parametrizations stay folded: spectral norm divides by the top singular value, which a cut
changes, so putting it back would rescale the kept weights. (The older hooks also make
``copy.deepcopy`` fail: `_util.clone` copies them.)
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.nn.utils.spectral_norm import SpectralNorm, remove_spectral_norm
from torch.nn.utils.weight_norm import WeightNorm, remove_weight_norm
from torch.nn.utils.weight_norm import weight_norm as old_weight_norm

log = logging.getLogger(__name__)


def has_computed_weight(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module) or any(
        isinstance(h, (WeightNorm, SpectralNorm)) for h in module._forward_pre_hooks.values())


@contextmanager
def plain_weights(modules: Iterable) -> Iterator[None]:
    """While active, the listed modules hold plain weights; weight norm is re-applied on exit.

    If the body raises, nothing is re-applied: the model is being discarded (healing retries on a
    fresh copy).
    """
    redo: list[Callable[[], None]] = []
    for m in dict.fromkeys(m for m in modules if isinstance(m, nn.Module) and has_computed_weight(m)):
        redo += fold(m)
    yield
    for again in redo:
        again()


def fold(m: nn.Module) -> list[Callable[[], None]]:
    """Fold ``m``'s computed weights into plain tensors; returns what puts weight norm back."""
    redo = []
    if parametrize.is_parametrized(m):
        _own_class(m)
        for name in list(m.parametrizations.keys()):
            chain = list(m.parametrizations[name])
            parametrize.remove_parametrizations(m, name, leave_parametrized=True)
            if len(chain) == 1 and isinstance(chain[0], parametrizations._WeightNorm):
                redo.append(lambda m=m, name=name, dim=chain[0].dim: parametrizations.weight_norm(m, name, dim))
            else:
                log.info("folded the parametrization of %s.%s into a plain tensor before cutting it",
                         type(m).__name__, name)
    for hook in list(m._forward_pre_hooks.values()):
        if isinstance(hook, WeightNorm):
            remove_weight_norm(m, hook.name)
            redo.append(lambda m=m, name=hook.name, dim=hook.dim: _old_weight_norm(m, name, dim))
        elif isinstance(hook, SpectralNorm):
            remove_spectral_norm(m, hook.name)
            log.info("folded the spectral norm of %s.%s into a plain weight before cutting it", type(m).__name__,
                     hook.name)
    return redo


def _own_class(m: nn.Module) -> None:
    """Give a parametrized module a class of its own before its parametrizations are removed.

    torch generates one class per parametrized module, and ``copy.deepcopy`` gives the copy that
    same class; ``remove_parametrizations`` then deletes the property from it, which breaks the
    original (the user's model: "'ParametrizedConv1d' object has no attribute 'weight'").
    """
    cls = type(m)
    namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    m.__class__ = type(cls.__name__, cls.__bases__, namespace)


def _old_weight_norm(m: nn.Module, name: str, dim: int) -> None:
    with warnings.catch_warnings():  # deprecated in torch, but it is what the model was written with
        warnings.simplefilter("ignore", FutureWarning)
        old_weight_norm(m, name, dim)
