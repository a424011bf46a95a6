"""Hugging Face mixture-of-experts blocks (Mixtral, Qwen-MoE, ...): kept whole for now.

transformers stores all experts of a block as one 3-D tensor per projection ([experts, out, in])
and picks an expert's slice by index at run time, which the dependency graph does not see; the
router reads the hidden width through a bare weight. Cutting the hidden width would narrow the
router and not the experts, so the whole block (router and experts) is kept whole, and with it
the hidden width it reads. Attention heads elsewhere in the model can still be cut.
"""

from __future__ import annotations

from torch import nn


def _stacked_experts(module: nn.Module) -> bool:
    experts = getattr(module, "experts", None)
    return isinstance(experts, nn.Module) and any(p.dim() == 3 for p in experts.parameters(recurse=False))


def kept_whole(model: nn.Module) -> set[nn.Module]:
    """Every module inside a mixture-of-experts block whose experts are stacked 3-D tensors."""
    out: set[nn.Module] = set()
    for module in model.modules():
        if type(module).__module__.startswith("transformers.") and _stacked_experts(module):
            out.update(module.modules())
    return out
