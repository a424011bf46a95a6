"""EVA attention (timm ``EvaAttention``): whole heads cut, the forward made to read the new width.

What the family looks like (timm/models/eva.py, EVA-02): a fused ``qkv`` Linear without bias, a
query bias ``q_bias`` and a value bias ``v_bias`` (parameters) and a zero key bias ``k_bias`` (a
buffer), joined in the forward as ``F.linear(x, qkv.weight, cat((q_bias, k_bias, v_bias)))``; or
separate ``q_proj``/``k_proj``/``v_proj``. Rotary embeddings (``apply_rot_embed_cat``) rotate q
and k with one table of ``head_dim`` entries shared by every block, and the heads go back through
``x.transpose(1, 2).reshape(B, N, C)`` with ``C`` the block's *input* width.

So ``head_dim`` cannot shrink (the rotary table would no longer fit), and heads x head_dim is tied
to the input width by that last reshape, which in EVA-02 Tiny is the model's output width. Whole
heads are the unit (attention.py ranks and cuts them: q, k and v rows, proj columns,
``num_heads``); this family adds what attention.py cannot know:

- `Traced`: while the graph is traced, each block runs `EvaForward` calling ``qkv`` as a
  module (timm's ``F.linear`` on ``qkv.weight`` hides the layer from the graph, so its output
  projection could not be found), then restores the block's own forward.
- `cut_heads`: the kept heads' entries of ``q_bias``/``k_bias``/``v_bias`` (and of a ``gate``
  Linear's rows).
- `finish`: a block whose heads or input width were cut has its forward replaced by `EvaForward`
  for good: the same computation, except that the heads go back through ``reshape(B, N, -1)``,
  so heads and the residual width are cut independently. It runs `EvaForward` from then on (also
  after `shrink.load`, which replays the cuts).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn


def matches(module: nn.Module) -> bool:
    """Is ``module`` an EVA attention block shrink can cut by whole heads?"""
    if hasattr(module, "config") or not all(hasattr(module, n) for n in ("q_bias", "v_bias", "k_bias")):
        return False
    if not isinstance(getattr(module, "num_heads", None), int) or not isinstance(getattr(module, "head_dim", None), int):
        return False
    if not isinstance(getattr(module, "num_prefix_tokens", None), int) or not isinstance(getattr(module, "proj", None), nn.Linear):
        return False
    if not isinstance(getattr(module, "norm", nn.Identity()), nn.Identity):
        return False  # a LayerNorm over all heads (scale_attn_inner): not cut here
    fused = isinstance(getattr(module, "qkv", None), nn.Linear)
    separate = all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj"))
    forward = type(module).forward
    return (fused or separate) and "rope" in inspect.signature(forward).parameters


def _rot(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def _rope(x: torch.Tensor, emb: torch.Tensor, half: bool) -> torch.Tensor:
    """timm's ``apply_rot_embed_cat``: emb is [sin | cos] along its last dimension."""
    sin_emb, cos_emb = emb.chunk(2, -1)
    out = x * cos_emb + (_rotate_half(x) if half else _rot(x)) * sin_emb
    return out.to(dtype=x.dtype)


class EvaForward:
    """timm's ``EvaAttention.forward`` with ``reshape(B, N, -1)``; ``traced``: ``qkv`` called as a module.

    Out of tracing the fused projection stays timm's ``F.linear`` on ``qkv.weight``, so that a
    count of MACs by module hooks sees the cut model as it sees the dense one.
    """

    def __init__(self, attn: nn.Module, *, traced: bool = False) -> None:
        self.attn = attn
        self.traced = traced

    def __call__(self, x, rope=None, attn_mask=None, is_causal=False):
        a = self.attn
        B, N, _ = x.shape
        gate = a.gate(x).sigmoid() if getattr(a, "gate", None) is not None else None
        if getattr(a, "qkv", None) is not None:
            bias = torch.cat((a.q_bias, a.k_bias, a.v_bias)) if a.q_bias is not None else None
            if self.traced:
                qkv = a.qkv(x) if bias is None else a.qkv(x) + bias
            else:
                qkv = F.linear(x, weight=a.qkv.weight, bias=bias)
            q, k, v = qkv.reshape(B, N, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (p(x).reshape(B, N, a.num_heads, -1).transpose(1, 2) for p in (a.q_proj, a.k_proj, a.v_proj))
        q, k = getattr(a, "q_norm", nn.Identity())(q), getattr(a, "k_norm", nn.Identity())(k)
        if rope is not None:
            npt, half = a.num_prefix_tokens, bool(getattr(a, "rotate_half", False))
            q = torch.cat([q[:, :, :npt, :], _rope(q[:, :, npt:, :], rope, half)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :npt, :], _rope(k[:, :, npt:, :], rope, half)], dim=2).type_as(v)
        drop = getattr(a, "attn_drop", None)
        p = drop.p if a.training and isinstance(drop, nn.Dropout) else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        x = x.transpose(1, 2).reshape(B, N, -1)  # timm: reshape(B, N, C), the input width
        x = a.norm(x)
        if gate is not None:
            x = x * gate
        x = a.proj(x)
        return a.proj_drop(x) if isinstance(getattr(a, "proj_drop", None), nn.Module) else x


class Traced:
    """While the graph is traced, every EVA block runs `EvaForward` (its ``qkv`` seen as a layer)."""

    def __init__(self, model: nn.Module) -> None:
        self._modules = [m for m in model.modules() if matches(m) and not isinstance(m.__dict__.get("forward"), EvaForward)]
        for m in self._modules:
            m.forward = EvaForward(m, traced=True)

    def close(self) -> None:
        for m in self._modules:
            m.__dict__.pop("forward", None)


def cut_heads(module: nn.Module, kept: list[int]) -> None:
    """Keep heads ``kept``: the biases' (and a gate's) entries of those heads; the forward that reads them."""
    if not matches(module):
        return
    d = module.head_dim
    old = module.num_heads * d
    idx = torch.tensor([h * d + i for h in kept for i in range(d)], dtype=torch.long)
    with torch.no_grad():
        for name in ("q_bias", "v_bias"):
            value = getattr(module, name)
            if isinstance(value, torch.Tensor) and value.shape[0] == old:
                setattr(module, name, nn.Parameter(value.index_select(0, idx).clone()))
        k_bias = getattr(module, "k_bias")
        if isinstance(k_bias, torch.Tensor) and k_bias.shape[0] == old:
            module.k_bias = k_bias.index_select(0, idx).clone()  # a (non-persistent) buffer stays one
        gate = getattr(module, "gate", None)
        if isinstance(gate, nn.Linear) and gate.out_features == old:
            gate.weight = nn.Parameter(gate.weight.index_select(0, idx).clone())
            if gate.bias is not None:
                gate.bias = nn.Parameter(gate.bias.index_select(0, idx).clone())
            gate.out_features = len(idx)


def finish(model: nn.Module, seen: object = None) -> None:
    """Every block whose heads x head_dim no longer equals its input width runs `EvaForward` for good."""
    for module in model.modules():
        if matches(module) and not isinstance(module.__dict__.get("forward"), EvaForward):
            first = module.qkv if isinstance(getattr(module, "qkv", None), nn.Linear) else module.q_proj
            if first.in_features != module.num_heads * module.head_dim:
                module.forward = EvaForward(module)
