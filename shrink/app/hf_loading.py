"""`--hf PATH`: a local Hugging Face model folder as the model to compress, and inputs that fit it.

Only the model class that ``config.json`` names from the ``transformers`` package itself is
used (``trust_remote_code`` stays off): a folder never makes shrink import code of its own.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ShrinkValueError


def load_hf(folder: str | Path) -> nn.Module:
    """The model a local Hugging Face folder holds, in eval mode (no download is tried)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ShrinkValueError(f"--hf {str(folder)!r} is not a Hugging Face model folder (no config.json there); "
                               "pass the folder save_pretrained wrote")
    try:
        import transformers
    except ImportError as exc:
        raise ShrinkValueError("--hf needs transformers: pip install 'shrink[hf]'") from exc
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    names = [n for n in (config.architectures or []) if hasattr(transformers, n)]
    cls = getattr(transformers, names[0]) if names else transformers.AutoModel
    try:
        return cls.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        raise ShrinkValueError(f"--hf {str(folder)!r}: transformers cannot load it: {exc}") from exc


def default_inputs(model: nn.Module, seq: int = 16):
    """One example row for the model's main input (token ids, pixels or audio features)."""
    config = model.config
    g = torch.Generator().manual_seed(0)
    main = getattr(model, "main_input_name", "input_ids")
    if main == "input_ids":
        x = {"input_ids": torch.randint(0, int(getattr(config, "vocab_size", 2) or 2), (1, seq), generator=g)}
    elif main == "pixel_values":
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        x = {"pixel_values": torch.randn(1, getattr(config, "num_channels", 3), size, size, generator=g)}
    elif main == "input_features":
        x = {"input_features": torch.randn(1, config.num_mel_bins, 2 * config.max_source_positions, generator=g)}
    else:
        raise ShrinkValueError(f"no default input for {type(model).__name__} (main input {main!r}): "
                               f"give it with --input {main}=SHAPE")
    if getattr(config, "is_encoder_decoder", False):
        start = getattr(config, "decoder_start_token_id", None) or 0
        x["decoder_input_ids"] = torch.full((1, 4), int(start), dtype=torch.long)
    return x
