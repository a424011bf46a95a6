"""Vision transformers as torchvision writes them: a stored width the forward reshapes with.

What the family looks like: a patch embedding conv ``conv_proj`` (torchvision) or ``patch_embed``
whose output channels are the hidden width, a ``class_token`` [1, 1, D] concatenated before the
patches and a ``pos_embedding`` [1, N+1, D] added to them, and an int ``hidden_dim`` that
``_process_input`` reads: ``x.reshape(n, self.hidden_dim, n_h * n_w)``.

How to cut: the hidden width is one residual group, traced by the engine through the conv, the
concatenation with the class token, the add of the position embedding (both bare parameters cut
along their last dim) and every block's LayerNorm and attention. What the engine cannot see is
the int: after the cut ``hidden_dim`` is set to the patch conv's new output width.
"""

from __future__ import annotations

from torch import nn

_PATCH = ("conv_proj", "patch_embed", "patch_embedding")
_WIDTH = ("hidden_dim", "embed_dim", "hidden_size")


def _patch_conv(module: nn.Module) -> nn.Conv2d | None:
    for name in _PATCH:
        child = getattr(module, name, None)
        if isinstance(child, nn.Conv2d):
            return child
        proj = getattr(child, "proj", None)  # timm PatchEmbed.proj
        if isinstance(proj, nn.Conv2d):
            return proj
    return None


def finish(model: nn.Module, seen: object = None) -> None:
    """Set each ViT's stored width attribute to its patch embedding's new output width."""
    for module in model.modules():
        if hasattr(module, "config"):
            continue  # Hugging Face models: their config is rewritten by the hf_* families
        conv = _patch_conv(module)
        if conv is None:
            continue
        for name in _WIDTH:
            value = getattr(module, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value != conv.out_channels:
                module.__dict__[name] = conv.out_channels
