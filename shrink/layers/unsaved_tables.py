"""Tables a Hugging Face class does not save, but rebuilds from its config when it is loaded.

What the family looks like: Marian's ``MarianSinusoidalPositionalEmbedding``, an ``nn.Embedding``
frozen at ``[max_position_embeddings, d_model]`` and filled with sines by ``_init_weights``.
``MarianMTModel`` lists its weight in ``_keys_to_ignore_on_save``, so a saved folder holds no
such table and ``from_pretrained`` computes it again at the config's width. A sine table at the
cut width is not the kept columns of the old one (each column's frequency depends on the width),
so a cut of the width it is added to would reload into a model that computes something else.

How to cut: not that width. While the graph is traced, every module holding a tensor the class
(the model, or a Hugging Face model inside it) does not save is a fixed width, so the groups
through it stay whole, with the reason; the rest of the model (heads, FFN) is cut as usual. A
table the class does save (``MarianModel``'s) is read back as written and is cut like any other.
"""

from __future__ import annotations

import re

import torch
from torch import nn

REASON = "a table the Hugging Face class does not save and rebuilds at the config's width (_keys_to_ignore_on_save)"


def unsaved(model: nn.Module) -> dict[nn.Module, str]:
    """{module: reason} for every module holding a tensor its Hugging Face class does not save."""
    found: dict[nn.Module, str] = {}
    for owner in model.modules():
        patterns = getattr(type(owner), "_keys_to_ignore_on_save", None)
        if not patterns or not hasattr(owner, "save_pretrained"):
            continue
        for name, module in owner.named_modules():
            tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            for tensor_name, _ in tensors:
                key = f"{name}.{tensor_name}" if name else tensor_name
                if any(re.search(p, key) for p in patterns):
                    found[module] = REASON
    return found


class Unsaved:
    """While one trace runs: the modules whose width a reload rebuilds (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = unsaved(model)

    def fixed(self, outputs: list[torch.Tensor]) -> dict[nn.Module, str]:
        return dict(self.modules)

    def close(self) -> None:
        self.modules = {}
