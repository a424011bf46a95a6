"""Relative position bias tables with one column per head (Hugging Face T5, Swin): cut with the heads.

- T5 (and mT5): the first self-attention layer of each stack owns ``relative_attention_bias``, an
  ``Embedding(num_buckets, heads)``; it computes the bias once and every later layer of the stack
  adds it, head by head. So every self-attention layer of a stack must keep the *same* heads:
  those blocks share one ranking (`shared_key`), and the table loses the removed heads' columns.
  Cross-attention adds a zero bias of its own head count: only the count must agree.
- Swin: each attention block owns ``relative_position_bias_table`` [(2W-1)^2, heads]; its columns
  follow the block's own heads.

A table whose last dimension is not the head count is left alone, and its block keeps its heads
(hf_attention.py says why).
"""

from __future__ import annotations

import re

import torch
from torch import nn

_TABLES = ("relative_attention_bias", "relative_position_bias_table")


def _tables(module: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """(owner, attribute, weight [positions, heads]) of every per-head table inside an attention module."""
    found = []
    for owner in module.modules():
        for attr in _TABLES:
            table = getattr(owner, attr, None)
            if isinstance(table, nn.Embedding):
                found.append((table, "weight", table.weight))
            elif isinstance(table, nn.Parameter) and table.dim() == 2:
                found.append((owner, attr, table))
    return found


def has_tables(module: nn.Module) -> bool:
    return bool(_tables(module)) or hasattr(module, "has_relative_attention_bias")


def cuttable(module: nn.Module, heads: int) -> bool:
    """Every per-head table of ``module`` has one column per head (so this file can cut it)."""
    return all(w.shape[-1] == heads for _, _, w in _tables(module))


def shared_key(name: str, module: nn.Module) -> str | None:
    """Blocks with the same key must keep the same heads: T5's self-attention layers of one stack."""
    if hasattr(module, "has_relative_attention_bias") and name.endswith("SelfAttention"):
        return re.sub(r"\.\d+\.", ".#.", name)
    return None


def cut_heads(module: nn.Module, kept: list[int]) -> None:
    """Keep only the columns of heads ``kept`` in every per-head table of ``module``."""
    for owner, attr, weight in _tables(module):
        new = nn.Parameter(weight.detach()[:, kept].clone(), requires_grad=weight.requires_grad)
        setattr(owner, attr, new)
        if isinstance(owner, nn.Embedding):
            owner.embedding_dim = len(kept)
