"""Token embeddings that multiply by a plain float ``embed_scale`` the config rebuilds as sqrt(hidden).

What the family looks like: an ``nn.Embedding`` subclass whose forward returns
``super().forward(ids) * self.embed_scale``, with ``embed_scale`` a Python float set in
``__init__`` to ``sqrt(config.hidden_size)`` when ``config.scale_embedding`` (BioGPT, XGLM,
TrOCR, M2M-100, ... ``...ScaledWordEmbedding``). It is no buffer, so embed_scale.py does not see it;
after a cut of the hidden width a folder loaded back scales by sqrt of the new width while the
kept weights were trained for the old scale.

How to cut: as the tracer does; `finish` then folds the ratio into the weights the same way
embed_scale.py does for a buffer (rows times old / new, scale set to new; a head tied to the
table gets the norm before it scaled by new / old, the decoder's ``norm``, ``final_layer_norm``
or ``layer_norm``; where none is found the scale is left as it was).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import hf_config
from .embed_scale import _norm_before_head, _scale_norm


def finish(model: nn.Module) -> None:
    """Fold each float-scaled embedding's change of scale into its weights (see the module docstring)."""
    if not hf_config.is_hf(model):
        return  # only a config rebuilds the scale
    for embedding in [m for m in model.modules() if isinstance(m, nn.Embedding)]:
        scale = vars(embedding).get("embed_scale")
        if not isinstance(scale, float) or "embed_scale" in embedding._buffers:
            continue
        old, new = scale, math.sqrt(embedding.weight.shape[1])
        if abs(old - 1.0) < 1e-6 or math.isclose(old, new, rel_tol=1e-6):
            continue  # no scale (scale_embedding=False), or the hidden width was not cut
        tied = [m for m in model.modules() if m is not embedding and getattr(m, "weight", None) is embedding.weight]
        norm = (_norm_before_head(model) or _layer_norm_of_decoder(model)) if tied else None
        if tied and (norm is None or not _scale_norm(norm, new / old)):
            continue
        with torch.no_grad():
            embedding.weight.mul_(old / new)
        embedding.embed_scale = new


def _layer_norm_of_decoder(model: nn.Module) -> nn.Module | None:
    """The final norm under the name BioGPT gives it (``layer_norm`` of the decoder)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    norm = getattr(decoder, "layer_norm", None)
    return norm if isinstance(norm, nn.LayerNorm) else None
