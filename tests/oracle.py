"""The masking oracle: a cut model must equal the original with the cut units' read-out zeroed.

Physically removing channel c is the same as leaving every layer in place and zeroing the
columns through which consumers read c. The reference is built from the plan's kept indices.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from shrink._util import inputs as _inputs
from shrink.cut.kinds import HeadDimCut
from shrink.layers import recurrent


def _drop(n: int, kept: list[int]) -> list[int]:
    keep = set(kept)
    return [i for i in range(n) if i not in keep]


def masked_reference(original: nn.Module, plan) -> nn.Module:
    ref = copy.deepcopy(original)
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for step in plan.steps:
            if isinstance(step.kind, HeadDimCut):  # the cut dims of every head: their q, k and v rows
                block = modules[step.layer]
                qkv = next((getattr(block, n) for n in ("qkv", "c_attn", "Wqkv", "in_proj", "to_qkv") if hasattr(block, n)), None)
                if qkv is None and isinstance(getattr(block, "qk", None), nn.Linear):
                    # fused [q | k] and separate v (ConViT's GPSA)
                    c = block.v.out_features
                    parts = [(block.qk, [s * c + i for s in range(2) for i in step.removed]), (block.v, list(step.removed))]
                elif qkv is None and isinstance(getattr(block, "kv", None), nn.Linear):
                    # separate q and fused kv (Twins' GSA without sr): q's rows, then k's and v's
                    c = block.q.out_features
                    parts = [(block.q, list(step.removed)), (block.kv, [s * c + i for s in range(2) for i in step.removed])]
                elif qkv is None:  # separate q, k and v (CaiT's class attention)
                    parts = [(getattr(block, n), list(step.removed)) for n in ("q", "k", "v")]
                else:
                    c = qkv.out_features // 3
                    parts = [(qkv, [s * c + i for s in range(3) for i in step.removed])]
                for layer, rows in parts:
                    layer.weight[rows] = 0
                    if layer.bias is not None:
                        layer.bias[rows] = 0
                for name in ("q_bias", "k_bias", "v_bias"):  # BEiT's biases passed to F.linear beside qkv
                    bias = getattr(block, name, None)
                    if isinstance(bias, torch.Tensor):
                        bias[list(step.removed)] = 0
        for name, dims in plan.kept.items():
            m = modules.get(name)
            if m is not None and recurrent.is_recurrent(m):
                _mask_recurrent(m, dims)
                continue
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
            elif isinstance(m, nn.modules.conv._ConvNd):  # transposed: weight is [in, out // groups, *k]
                m.weight[_drop(m.in_channels, dims["in"])] = 0
            elif type(m).__name__ == "Conv1D":
                m.weight[_drop(m.weight.shape[0], dims["in"])] = 0
    return ref


def _mask_recurrent(m: nn.RNNBase, dims: dict) -> None:
    """A hidden unit whose gate rows are all zero stays 0 from a zero state (LSTM: g=0 so c and h
    stay 0; GRU: n=0 so h = z*h stays 0; RNN: tanh(0)=0): the same as the unit removed."""
    H, G, D = m.hidden_size, recurrent.GATES[type(m)], 2 if m.bidirectional else 1
    if "out" in dims:
        gone = sorted({i % H for i in _drop(D * H, dims["out"])})
        rows = [g * H + j for g in range(G) for j in gone]
        for name, p in m.named_parameters():
            if name.startswith(("weight", "bias")):
                p[rows] = 0
    if "in" in dims:
        gone = _drop(m.input_size, dims["in"])
        for d in range(D):
            getattr(m, "weight_ih_l0" + ("_reverse" if d else ""))[:, gone] = 0


def assert_matches_oracle(original: nn.Module, result, inputs, atol: float = 1e-5) -> None:
    ref = masked_reference(original, result.plan).eval()
    args, kwargs = _inputs.call_args(inputs)
    with torch.no_grad():
        expected = _inputs.flatten_outputs(ref(*args, **kwargs))
        got = _inputs.flatten_outputs(result.model.eval()(*args, **kwargs))
    assert list(expected) == list(got)
    for key in expected:
        e, g = expected[key], got[key]
        assert e.shape == g.shape, f"{key}: shape {tuple(g.shape)} != {tuple(e.shape)}"
        scale = max(1.0, float(e.abs().max()))
        diff = float((e - g).abs().max())
        assert diff <= atol * scale, f"{key}: cut model differs from the masked original by {diff}"
        assert math.isfinite(diff)
