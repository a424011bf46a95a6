"""Position tables kept as buffers and added to the embedding (PyTorch's word-language-model example).

What the family looks like: a float buffer such as ``pe`` [max_len, 1, d_model] (or
``pos_embed`` [1, N, D]) that the forward adds to the activations, ``x + self.pe[:x.size(0)]``.
Autograd does not see a buffer, so the graph would cut the embedding width it is added to and
leave the table at the old width.

How to cut: while the graph is traced the table is a parameter (`Promote`), so the engine
couples its last dimension with the width it is added to, exactly like a ViT's ``pos_embedding``
parameter; right after tracing it is a buffer again, and after the cut (`finish`) the narrowed
table is put back as a buffer, so ``state_dict`` keys and ``model.parameters()`` stay as built.
A table column belongs to one channel only, so the cut equals masking that channel.
"""

from __future__ import annotations


import torch
from torch import nn

NAMES = ("pe", "pos_embed", "pos_embedding", "position_embedding", "position_embeddings",
         "positional_encoding", "pos_encoding", "pos_enc")

def _tables(model: nn.Module):
    for module in model.modules():
        if "Rotary" in type(module).__name__:
            continue  # a rotary table (timm's RotaryEmbeddingCat.pos_embed, sin | cos) multiplies q and k: not added
        for name, buf in list(module.named_buffers(recurse=False)):
            if name in NAMES and buf is not None and buf.is_floating_point() and buf.dim() >= 2:
                yield module, name, buf


class Promote:
    """Position buffers are parameters while the graph is traced, buffers again afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self._restore = []
        # module -> buffer names promoted to parameters for tracing; `finish` turns them back into buffers.
        self.promoted: dict[nn.Module, dict[str, bool]] = {}
        for module, name, buf in _tables(model):
            persistent = name not in module._non_persistent_buffers_set
            self._restore.append((module, name, buf, persistent))
            self.promoted.setdefault(module, {})[name] = persistent
            delattr(module, name)
            module.register_parameter(name, nn.Parameter(buf, requires_grad=True))

    def close(self) -> None:
        for module, name, buf, persistent in self._restore:
            delattr(module, name)
            module.register_buffer(name, buf, persistent=persistent)


def finish(model: nn.Module, seen: Promote | None) -> None:
    """A table the cut narrowed comes back as a parameter: make it the buffer it was."""
    promoted = seen.promoted if seen is not None else {}
    for module in model.modules():
        for name, persistent in promoted.get(module, {}).items():
            value = module._parameters.get(name)
            if isinstance(value, torch.Tensor):
                delattr(module, name)
                module.register_buffer(name, value.detach(), persistent=persistent)
