"""Deep copies that also work on models whose weights a forward hook computes: `torch.nn.utils.prune`
masks and the older `torch.nn.utils.weight_norm` / `spectral_norm` (their weight is a non-leaf tensor,
which ``copy.deepcopy`` refuses); and `Spill`, the same copies read back from disk."""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import weakref
from collections.abc import Callable, Iterator

import torch
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


class Spill:
    """A model as it is now, kept on disk instead of in memory: ``fresh()`` gives copies of it.

    Every parameter and buffer is written once to a temporary file; the model's structure is kept
    with meta-device placeholders in their places (no memory). Each ``fresh()`` copies that
    structure and puts back tensors memory-mapped from the file (copy-on-write), so a copy costs
    disk reads, not a second model in RAM. ``close()`` removes the file (on Linux a copy still in
    use keeps reading it). The file lies in ``tempfile.gettempdir()`` (``TMPDIR``).
    """

    def __init__(self, model: nn.Module, directory: str | None = None) -> None:
        tensors: dict[int, torch.Tensor] = {}
        for module in model.modules():
            for t in (*module._parameters.values(), *module._buffers.values()):
                if t is not None:
                    tensors.setdefault(id(t), t)
        odd = sorted({type(t).__name__ for t in tensors.values() if type(t) not in (torch.Tensor, nn.Parameter)})
        if odd:
            raise TypeError(f"tensor subclasses {odd} cannot be spilled")
        self._index = {key: i for i, key in enumerate(tensors)}
        self._originals = weakref.WeakValueDictionary(tensors)
        self._mapped: list[torch.Tensor] | None = None
        fd, self.path = tempfile.mkstemp(prefix="shrink-pristine-", suffix=".pt", dir=directory)
        os.close(fd)
        try:
            torch.save([t.detach() for t in tensors.values()], self.path)
            self.placeholders = [_meta_like(t) for t in tensors.values()]
            memo = {key: meta for key, meta in zip(tensors, self.placeholders)}
            saved = [(m, name, m.__dict__.pop(name)) for m, name, _ in computed_weights(model) if name in m.__dict__]
            try:
                self.skeleton = copy.deepcopy(model, memo)
            finally:
                for m, name, value in saved:
                    setattr(m, name, value)
        except BaseException:
            self.close()
            raise

    def fresh(self) -> nn.Module:
        loaded = torch.load(self.path, mmap=True, weights_only=True)
        memo = {id(meta): nn.Parameter(real, requires_grad=meta.requires_grad) if isinstance(meta, nn.Parameter)
                else real for meta, real in zip(self.placeholders, loaded)}
        twin = copy.deepcopy(self.skeleton, memo)
        for m, name, compute in computed_weights(twin):
            setattr(m, name, compute(m))
        return twin

    def put_back(self, param: nn.Parameter) -> None:
        """Release a parameter the cut replaced: one of the model's own keeps its values, memory-mapped
        from the file (no RAM until read; an undo finds them), any other is emptied."""
        i = self._index.get(id(param))
        if i is None or self._originals.get(id(param)) is not param:
            emptied(param)
            return
        if self._mapped is None:
            self._mapped = torch.load(self.path, mmap=True, weights_only=True)
        param.data = self._mapped[i]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.remove(self.path)


def emptied(param: nn.Parameter) -> None:
    """Release a parameter the cut replaced by keeping no values in it (a copy nobody needs any more)."""
    param.data = torch.empty(0, dtype=param.dtype, device=param.device)


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    meta = torch.empty_like(t, device="meta")
    return nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
