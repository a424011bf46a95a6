"""Token embeddings scaled by the square root of the hidden size, a value rebuilt from the config.

What the family looks like: an ``nn.Embedding`` holding a non-persistent scalar buffer
``embed_scale`` that its forward multiplies in (Gemma, Gemma 2 and 3's ``...ScaledWordEmbedding``;
BART-style ``scale_embedding``), or a plain float attribute of that name (BioGPT, XGLM, TrOCR,
M2M-100), held by the embedding or by the encoder/decoder that multiplies its ``embed_tokens``
output by it (FSMT). The config builds it as ``sqrt(hidden_size)``, so after a cut of
the hidden width a folder saved and loaded back scales by the new width while the kept weights
were trained for the old scale: the reloaded model computes something else (logits off by 1e-2).

How to cut: as the tracer does; `finish` then moves the scale ratio into the weights, exactly:
the embedding rows are multiplied by ``old / new`` and the buffer set to ``new``, so the residual
stream is unchanged. Where the output head is tied to the same table (Gemma), the head would
now read ``old / new`` times larger logits, and the norm feeding it is multiplied by ``new /
old`` (a plain norm's weight and bias, or Gemma's ``1 + weight``). A head tied to a table whose
norm cannot be found is left as it was; `save_pretrained`'s read-back then names the scale.

T5 does the like at the other end: with its head tied to the embeddings it multiplies the
decoder's output by ``model_dim ** -0.5``, ``model_dim`` an int set from ``d_model`` when the model
is built. After a cut of ``d_model`` `finish` sets ``model_dim`` to the new width and multiplies
the decoder's final norm by ``sqrt(new / old)``, so the logits are unchanged in memory and in a
reloaded folder.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def finish(model: nn.Module, seen: object = None) -> None:
    """Fold each scaled embedding's change of scale into its weights (see the module docstring)."""
    if not (hasattr(model, "config") and hasattr(model, "save_pretrained")):
        return  # only a config rebuilds the scale; a plain module keeps its buffer as it is
    _tied_head_scale(model)
    outer = _outer_scales(model)
    folded: set[int] = set()  # tables already multiplied by old / new
    refused: set[int] = set()  # tables whose tied head has no norm to take the scale
    for embedding in [m for m in model.modules() if isinstance(m, nn.Embedding)]:
        scale = embedding._buffers.get("embed_scale")
        holders = outer.get(embedding, [])
        if isinstance(scale, torch.Tensor) and scale.numel() == 1:
            old = float(scale)
        elif isinstance(vars(embedding).get("embed_scale"), float):
            old, scale = vars(embedding)["embed_scale"], None  # a float the forward multiplies by
        elif holders and len({vars(h)["embed_scale"] for h in holders}) == 1:
            old, scale = vars(holders[0])["embed_scale"], None  # FSMT: the encoder scales embed_tokens(ids)
        else:
            continue
        new = math.sqrt(embedding.weight.shape[1])
        if abs(old - 1.0) < 1e-6 or math.isclose(old, new, rel_tol=1e-6):
            continue  # no scale (scale_embedding=False), or the hidden width was not cut
        if not any(math.isclose(old, math.sqrt(w), rel_tol=1e-6) for w in _config_widths(model)):
            continue  # a scale of its own (MiniCPM's scale_emb), not sqrt(hidden): the config rebuilds it as it is
        # One table under several embeddings (BART-style shared, encoder and decoder embed_tokens) is
        # folded once; each embedding's scale is set. A head reading the table is not an embedding.
        if id(embedding.weight) in refused:
            continue
        first = id(embedding.weight) not in folded
        tied = [m for m in model.modules() if not isinstance(m, nn.Embedding)
                and getattr(m, "weight", None) is embedding.weight]
        norm = _norm_before_head(model) if tied and first else None
        if tied and first and (norm is None or not _scale_norm(norm, new / old)):
            refused.add(id(embedding.weight))
            continue
        folded.add(id(embedding.weight))
        with torch.no_grad():
            if first:
                embedding.weight.mul_(old / new)
            if scale is not None:
                scale.fill_(new)
            elif holders:
                for holder in holders:
                    holder.embed_scale = new
            else:
                embedding.embed_scale = new
        if isinstance(getattr(embedding, "scalar_embed_scale", None), float):
            embedding.scalar_embed_scale = new


def _outer_scales(model: nn.Module) -> dict[nn.Module, list[nn.Module]]:
    """{embedding: the modules holding the float ``embed_scale`` they multiply its output by}: an
    encoder or decoder scaling its ``embed_tokens`` (FSMT), one list where two share the table."""
    found: dict[nn.Module, list[nn.Module]] = {}
    for module in model.modules():
        table = getattr(module, "embed_tokens", None)
        if isinstance(table, nn.Embedding) and isinstance(vars(module).get("embed_scale"), float):
            found.setdefault(table, []).append(module)
    return found


def _config_widths(model: nn.Module) -> list[int]:
    """The hidden sizes the config states (before describe rewrites them: the widths before the cut)."""
    config = model.config
    return [v for k in ("hidden_size", "d_model", "n_embd", "dim") if isinstance(v := getattr(config, k, None), int)]


def _tied_head_scale(model: nn.Module) -> None:
    """T5's ``sequence_output * model_dim ** -0.5`` before a tied head, after a cut of ``d_model``."""
    old, head = getattr(model, "model_dim", None), getattr(model, "lm_head", None)
    if not isinstance(old, int) or not isinstance(head, nn.Linear) or head.in_features == old:
        return
    if not getattr(model.config, "tie_word_embeddings", False):
        return
    norm = _norm_before_head(model)
    if norm is not None and _scale_norm(norm, math.sqrt(head.in_features / old)):
        model.model_dim = head.in_features


def _norm_before_head(model: nn.Module) -> nn.Module | None:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    norm = getattr(decoder, "norm", None) or getattr(decoder, "final_layer_norm", None)
    if norm is None and isinstance(getattr(decoder, "layer_norm", None), nn.LayerNorm):
        norm = decoder.layer_norm  # BioGPT's name for it
    layers = getattr(decoder, "layers", None)
    if norm is None and isinstance(layers, nn.ModuleList) and len(layers):
        # A post-LN decoder with no norm of its own (PLBart, BigBird-Pegasus' BART layout): its last
        # layer ends with final_layer_norm, whose output is what the head reads.
        norm = getattr(layers[-1], "final_layer_norm", None)
    return norm if isinstance(getattr(norm, "weight", None), torch.Tensor) else None


def _scale_norm(norm: nn.Module, factor: float) -> bool:
    """Multiply ``norm``'s output by ``factor``; found by trying both weight forms on random input."""
    weight, bias = norm.weight, getattr(norm, "bias", None)
    x = torch.randn(4, weight.shape[0], generator=torch.Generator().manual_seed(0)).to(weight)
    saved = (weight.detach().clone(), bias.detach().clone() if isinstance(bias, torch.Tensor) else None)
    with torch.no_grad():
        want = norm(x) * factor
        for one_plus in (False, True):
            weight.copy_((1 + saved[0]) * factor - 1 if one_plus else saved[0] * factor)
            if saved[1] is not None:
                bias.copy_(saved[1] * factor)
            if torch.allclose(norm(x), want, rtol=1e-4, atol=1e-5):
                return True
        weight.copy_(saved[0])
        if saved[1] is not None:
            bias.copy_(saved[1])
    return False
