"""Hugging Face attention blocks whose heads cannot be cut as their q/k/v rows suggest.

`attention.find_blocks` recognises these blocks (so their q/k/v layers are never narrowed by a
width group either) but leaves their heads whole, for a reason a report can show:

- BLOOM and the original Falcon layout interleave q, k and v per head ([head, 3, head_dim]) and
  BLOOM's ALiBi slopes are a function of the head count, so the kept heads would see other slopes.
  (BLOOM's head *dims* are cut with its hidden width instead: tied_attention.py.)
- Falcon's new decoder architecture groups rows per key/value head ([kv, q.. k v, head_dim]).
- (Swin's and T5's relative position bias tables, one column per head, are cut with the heads:
  position_bias.py; only a table laid out otherwise keeps the heads whole.)

FSMT's attention stores its input width as ``embed_dim`` and asserts it in forward, then reshapes
the heads to that input width: it runs only where q is as wide as its input (the config derives
head_dim = d_model / heads, so a uniform cut keeps that), and `restate_embed_dim` sets the
attribute after the cut.

It also names the query projections a block holds beside ``query`` (`queries`): LUKE's
entity-aware attention asks the same keys with one query per pair of token kinds (word to word
is ``query``; ``w2e_query``, ``e2w_query``, ``e2e_query``), each ``all_head_size`` wide, so they
lose the heads and the input columns ``query`` loses. Longformer's and LED's encoder attention
makes the same heads a second time for its global tokens (``query_global``, ``key_global``,
``value_global``; multi-head, so every one is as wide as ``query`` and loses its rows).
"""

from __future__ import annotations

import re

from torch import nn

from . import position_bias


def _from_transformers(module: nn.Module) -> bool:
    return type(module).__module__.startswith("transformers.")


def locked(module: nn.Module, heads: int | None = None) -> str | None:
    """Why the heads of this attention module must stay whole, or None when they can be cut.

    ``heads``: the block's head count; per-head position bias tables with one column per head
    are cut with the heads (position_bias.py).
    """
    if not _from_transformers(module):
        return None
    name = type(module).__name__
    if name.startswith("Bloom"):
        return "ALiBi slopes per head and q/k/v interleaved per head"
    if name.startswith("Falcon") and not getattr(module, "multi_query", False):
        return "q/k/v interleaved per head (Falcon layout)"
    if position_bias.has_tables(module) and (heads is None or not position_bias.cuttable(module, heads)):
        return "a relative position bias table whose columns are not one per head"
    return None


# LUKE's word/entity pair queries: w2e_query, e2w_query, e2e_query ("<kind>2<kind>_query");
# Longformer's and LED's global-token projections: query_global, key_global, value_global.
_SAME_HEADS = re.compile(r"^[a-z]2[a-z]_query$|^(query|key|value)_global$")


def queries(module: nn.Module, q: nn.Module) -> list[nn.Module]:
    """The projections of ``module`` other than q/k/v that read the same width and make the same heads,
    as wide as ``q`` (LUKE's entity-aware queries, Longformer's global q/k/v); [] for every other family."""
    if not _from_transformers(module) or not hasattr(q, "weight"):
        return []
    return [m for name, m in module.named_children()
            if _SAME_HEADS.match(name) and m is not q and getattr(m, "weight", None) is not None
            and m.weight.shape == q.weight.shape]


def restate_embed_dim(module: nn.Module, q: nn.Module) -> None:
    """Set a Hugging Face attention's stored ``embed_dim`` to its width after a cut, where q reads and
    writes one width (FSMT asserts its input is ``embed_dim`` wide)."""
    value = getattr(module, "embed_dim", None)
    weight = getattr(q, "weight", None)
    if not _from_transformers(module) or not isinstance(value, int) or isinstance(value, bool) or weight is None:
        return
    if weight.dim() == 2 and weight.shape[0] == weight.shape[1] != value:
        module.embed_dim = int(weight.shape[0])


def interleaved(module: nn.Module) -> bool:
    """A fused q/k/v laid out per head, [head, (q, k, v), head_dim]: GPT-NeoX's ``query_key_value``."""
    return _from_transformers(module) and type(module).__name__.startswith("GPTNeoX")
