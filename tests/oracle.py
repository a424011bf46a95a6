"""The masking oracle: a cut model must equal the original with the cut units' read-out zeroed.

Physically removing channel c is the same as leaving every layer in place and zeroing the
columns through which consumers read c. The reference is built from the plan's kept indices.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def _drop(n: int, kept: list[int]) -> list[int]:
    keep = set(kept)
    return [i for i in range(n) if i not in keep]


def masked_reference(original: nn.Module, plan) -> nn.Module:
    ref = copy.deepcopy(original)
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for name, dims in plan.kept.items():
            m = modules.get(name)
            if isinstance(m, nn.MultiheadAttention) and "out" in dims:
                e = m.embed_dim
                gone = _drop(e, dims["out"])
                m.in_proj_weight[:, gone] = 0  # reads of the cut residual channels
                for part in range(3):  # the cut per-head dims of q, k and v
                    rows = [part * e + i for i in gone]
                    m.in_proj_weight[rows] = 0
                    m.in_proj_bias[rows] = 0
                m.out_proj.weight[:, gone] = 0
                continue
            if "in" not in dims or m is None:
                continue
            if isinstance(m, nn.Linear):
                m.weight[:, _drop(m.in_features, dims["in"])] = 0
            elif isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
                per = m.in_channels // m.groups
                out_per = m.out_channels // m.groups
                for c in _drop(m.in_channels, dims["in"]):
                    g = c // per
                    m.weight[g * out_per:(g + 1) * out_per, c % per] = 0
            elif type(m).__name__ == "Conv1D":
                m.weight[_drop(m.weight.shape[0], dims["in"])] = 0
    return ref


def assert_matches_oracle(original: nn.Module, result, inputs, atol: float = 1e-5) -> None:
    ref = masked_reference(original, result.plan).eval()
    with torch.no_grad():
        expected = ref(inputs)
        got = result.model.eval()(inputs)
    scale = max(1.0, float(expected.abs().max()))
    diff = float((expected - got).abs().max())
    assert diff <= atol * scale, f"cut model differs from the masked original by {diff}"
    assert math.isfinite(diff)
