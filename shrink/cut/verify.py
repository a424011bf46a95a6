"""Verified cuts: physically removing units must equal the original model with their read-out zeroed.

Removing channel c from the layers that produce it and the columns that read it is the same
function as leaving every layer in place and zeroing c where each consumer reads it. shrink
checks this inside `compress` on the example inputs:

1. cut the steps that cannot be checked exactly (see `exact`), so both sides share them;
2. run the model with each remaining step's channels zeroed at the inputs of its consumers
   (forward pre-hooks): the reference;
3. cut those steps; the outputs must equal the reference up to float rounding.

A mismatch means the tracer missed a coupling (an op it does not see, a shape read from a stored
attribute); `heal.py` then keeps the groups responsible whole. Steps are exact unless a channel-mixing
normalisation (LayerNorm, GroupNorm, RMSNorm), a weight-standardised convolution
(layers/std_conv.py) or nn.MultiheadAttention's per-head dims sit on the cut width, or a consumer
reads the channels in a way shrink cannot zero from outside: those
are checked for running and output shapes only, and reported as such.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import hf_moe, registry
from ..layers.rows import is_hf_conv1d
from .graph import Group, Traced
from .plan import Step

# Layers that read channels on dim 1 (images) or the last dim (tokens), and whose input can be zeroed.
_READS_DIM1 = (nn.modules.conv._ConvNd,)
# Per-channel layers: a removed channel's value passes through them and is zeroed further on.
_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.PReLU, nn.Embedding)

_RTOL = 1e-4
# A model computing in half precision rounds each output to 8 (bf16) or 11 (fp16) significant bits,
# and the cut model sums fewer terms in another order: a few units in the last place of the
# largest output. A channel read by something the tracer does not see is off by far more.
_RTOL_HALF = {torch.bfloat16: 2e-2, torch.float16: 4e-3}


def tolerance(model: nn.Module) -> float:
    """The relative tolerance of `compare` for ``model``: looser when it computes in bf16 or fp16."""
    dtypes = {p.dtype for p in model.parameters()}
    return max([_RTOL, *(_RTOL_HALF[d] for d in dtypes if d in _RTOL_HALF)])


@dataclass(frozen=True)
class Mismatch:
    """What a failed check found (internal)."""

    reason: str
    layer: str = ""


def _reads_last_dim(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.modules.rnn.RNNBase)) or is_hf_conv1d(module)


def _mixes_channels(module) -> bool:
    """A member whose output for one channel depends on the others (so masking is not exact)."""
    if isinstance(module, nn.Parameter):
        return module.dim() == 1  # an RMSNorm-style scale traced as a bare parameter
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention)):
        return True
    return "RMSNorm" in type(module).__name__ or "LayerNorm" in type(module).__name__


def exact(group: Group) -> bool:
    """Whether cutting ``group`` can be checked against masking exactly."""
    dg = group.tp_group._DG
    for item in group.tp_group:
        module = item.dep.target.module
        if _mixes_channels(module):
            return False
        inexact = isinstance(module, nn.Module) and registry.inexact(module)
        if inexact and not dg.is_out_channel_pruning_fn(item.dep.handler):
            return False  # weight standardisation normalises each filter over the fan-in being cut
        if isinstance(module, nn.Module) and not _is_tracer_op(module) and not _known(module):
            return False
    return True


def _is_tracer_op(module: nn.Module) -> bool:
    """torch-pruning's stand-ins for adds, concats, reshapes...: the values pass through them."""
    return type(module).__module__.startswith("torch_pruning")


def _known(module: nn.Module) -> bool:
    if isinstance(module, _READS_DIM1 + _PER_CHANNEL) or _reads_last_dim(module):
        return not isinstance(module, nn.modules.rnn.RNNBase)  # recurrent read-outs are internal
    return False


def reads_channels(module: nn.Module) -> bool:
    """Whether masking can zero the channels ``module`` reads (at dim 1, or the last dim)."""
    return isinstance(module, _READS_DIM1) or _reads_last_dim(module)


def find_group(traced: Traced, step: Step) -> Group | None:
    return next((g for g in traced.groups if g.root_name == step.layer), None)


@contextmanager
def zeroed_readouts(readouts: list[tuple[nn.Module, list[int]]]) -> Iterator[None]:
    """While active, each consumer sees the listed input channels as zeros."""
    by_module: dict[nn.Module, set[int]] = {}
    for module, idxs in readouts:
        by_module.setdefault(module, set()).update(idxs)

    def hook_for(module: nn.Module, idxs: set[int]):
        index = sorted(idxs)
        dim = 1 if isinstance(module, _READS_DIM1) else -1

        def pre(_module, args):
            if not args or not isinstance(args[0], torch.Tensor):
                return None
            x = args[0].clone()
            x.index_fill_(dim if dim >= 0 else x.dim() - 1, torch.tensor(index, device=x.device), 0)
            return (x, *args[1:])

        return pre

    # Mixture-of-experts units are read inside one module: their down columns are zeroed in place.
    experts = {m: idxs for m, idxs in by_module.items() if hf_moe.cuttable(m)}
    saved = {m: m.down_proj.detach().clone() for m in experts}
    with torch.no_grad():
        for m, idxs in experts.items():
            for e, units in enumerate(hf_moe.per_expert(m, sorted(idxs))):
                m.down_proj[e][:, units] = 0
    handles = [m.register_forward_pre_hook(hook_for(m, idxs)) for m, idxs in by_module.items() if m not in experts]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for m, weight in saved.items():
                m.down_proj.copy_(weight)


def readouts(traced: Traced, steps: list[Step]) -> list[tuple[nn.Module, list[int]]]:
    """Every (consumer, input channels) the steps remove, for `zeroed_readouts`."""
    return [r for step in steps for r in step.kind.readouts(traced, step)]


def compare(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor],
            rtol: float = _RTOL) -> Mismatch | None:
    """None when every output matches within float rounding (``rtol`` of the output's scale)."""
    for name, ref in expected.items():
        out = got.get(name)
        if out is None or out.shape != ref.shape:
            return Mismatch(f"output {name!r} changed shape: {tuple(ref.shape)} -> "
                            f"{tuple(out.shape) if out is not None else 'missing'}")
        if not ref.is_floating_point():
            if not torch.equal(ref, out):
                return Mismatch(f"output {name!r} differs from the original with the cut units masked")
            continue
        a, b = torch.nan_to_num(ref.double()), torch.nan_to_num(out.double())
        scale = max(float(a.abs().max()) if a.numel() else 0.0, 1e-3)
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        if diff > rtol * scale:
            return Mismatch(
                f"output {name!r} differs from the original with the cut units masked by {diff:.3g} "
                f"(relative {diff / scale:.2g}): the channels are read by something the tracer does not see")
    return None
