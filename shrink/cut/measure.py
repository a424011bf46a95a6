"""Size of a model: parameters and multiply-accumulates (MACs) on given inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .._util import checks
from .._util import inputs as _inputs
from ..layers.rows import is_hf_conv1d


@dataclass(frozen=True)
class Size:
    """Parameters and MACs of a model on one set of inputs.

    Attributes:
        params: number of parameter elements (shared tensors counted once).
        macs: multiply-accumulates of the Linear, convolution, Conv1D and attention layers in one
            forward pass on the example inputs (element-wise ops, norms and activations excluded).
    """

    params: int
    macs: int

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """Parameter elements, each shared tensor once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _macs_of(module: nn.Module, inputs: tuple, output) -> int:
    if isinstance(output, tuple):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        return 0
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if is_hf_conv1d(module):
        return output.numel() * module.weight.shape[0]
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:  # weight [in, out/groups, *k]: each input element feeds out/groups*k outputs
            x = inputs[0]
            return x.numel() * module.weight.shape[1] * module.weight[0, 0].numel()
        return output.numel() * module.weight[0].numel()  # in/groups * prod(kernel)
    if isinstance(module, nn.MultiheadAttention) and inputs:
        query, key = inputs[0], inputs[1] if len(inputs) > 1 else inputs[0]
        e = module.embed_dim
        lq, lk = query.numel() // query.shape[-1], key.numel() // key.shape[-1]
        projections = lq * e * e + 2 * lk * e * e + lq * e * e  # q, k, v, out
        seq_q = query.shape[1] if module.batch_first else query.shape[0]
        seq_k = key.shape[1] if module.batch_first else key.shape[0]
        n = lq // seq_q
        return projections + 2 * n * seq_q * seq_k * e  # scores and weighted sum
    return 0


def count(model: nn.Module, example_inputs, *, return_outputs: bool = False):
    """Parameters and MACs of ``model`` on ``example_inputs`` (one forward pass, no grad).

    With ``return_outputs=True`` returns ``(Size, outputs)``, so callers need no second pass.
    """
    checks.module(model)
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += _macs_of(module, inputs, output)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention)) or is_hf_conv1d(m)
    ]
    try:
        with torch.no_grad():
            outputs = _inputs.run(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    size = Size(params=count_params(model), macs=int(total))
    return (size, outputs) if return_outputs else size


@dataclass(frozen=True)
class Measured:
    """Latency of the dense and compressed models, timed in turn on the target's runtime.

    Attributes:
        runtime, device, batch_size: where it was measured.
        target: what was asked, e.g. ``{"speedup": 2.0}`` or ``{"latency_ms": 5.0}``.
        dense_p50_ms, compressed_p50_ms: median latency of one call.
        dense_spread, compressed_spread: p90 / p50 of each (noise; 1.0 is steady).
        speedup: median over rounds of dense / compressed latency, each pair timed back to back
            (close to dense_p50_ms / compressed_p50_ms on a quiet machine, steadier on a busy one).
        speedup_low, speedup_high: its 95% interval.
        predicted_speedup: what the latency tables predicted for the chosen widths.
        rounds: allocate-cut-measure rounds it took.
        met: the measured speed-up meets the target within the measurement's noise.
    """

    runtime: str
    device: str
    batch_size: int
    target: dict
    dense_p50_ms: float
    compressed_p50_ms: float
    dense_spread: float
    compressed_spread: float
    speedup: float
    speedup_low: float
    speedup_high: float
    predicted_speedup: float
    rounds: int
    met: bool

    def to_dict(self) -> dict:
        return asdict(self)
