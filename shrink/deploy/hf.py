"""`save_pretrained`: a compressed Hugging Face model as a folder every Hugging Face tool loads.

The folder is what ``model.save_pretrained`` writes (config.json with the new sizes, weights,
generation config), plus shrink's ``plan.json`` and the tokenizer/processor files of the folder
the model was loaded from. It is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from .._util.atomic import atomic_folder
from .._util.versions import __version__
from ..errors import ShrinkTypeError, ShrinkValueError
from ..layers import hf_config
from .store import PLAN

log = logging.getLogger(__name__)

# Files of a model folder that describe its inputs, not its weights: they travel with the model.
_PROCESSOR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
    "preprocessor_config.json", "processor_config.json", "feature_extractor_config.json",
    "image_processor_config.json", "chat_template.jinja", "chat_template.json", "normalizer.json",
)


def save_pretrained(result, folder: str | os.PathLike, *, overwrite: bool = False,
                    source: str | os.PathLike | None = None) -> Path:
    """Write ``result.model`` as a Hugging Face model folder, plus shrink's plan.json.

    Args:
        result: a `Result` from `compress` on a transformers `PreTrainedModel`.
        folder: where to write; must not exist unless ``overwrite=True``.
        overwrite: replace an existing folder.
        source: the folder the un-pruned model was loaded from, for its tokenizer/processor
            files; by default the model's own ``name_or_path`` when that is a local folder.

    Returns:
        The folder's path; ``AutoModel*.from_pretrained(folder)`` loads the compressed model.

    Raises:
        ShrinkTypeError: the model is not a Hugging Face `PreTrainedModel`.
        ShrinkValueError: the config cannot describe the model (layers of one kind with different
            widths); the message says which and what to do instead.

    Example:
        >>> import shrink, transformers, torch, tempfile, os
        >>> cfg = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16)
        >>> result = shrink.compress(transformers.GPT2LMHeadModel(cfg), {"input_ids": torch.ones(1, 4, dtype=torch.long)})
        >>> out = shrink.save_pretrained(result, os.path.join(tempfile.mkdtemp(), "gpt2-small"))
        >>> transformers.AutoModelForCausalLM.from_pretrained(out).config.n_embd
        8
    """
    model = result.model
    if not hf_config.is_hf(model):
        raise ShrinkTypeError(
            f"save_pretrained needs a Hugging Face PreTrainedModel; got {type(model).__name__}. "
            "Use shrink.save(result, folder) and shrink.load(folder, base_model) for other models."
        )
    _refuse_what_config_cannot_say(model)  # before any folder exists
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        write_into(result, tmp, source=source)
    return Path(folder)


def _refuse_what_config_cannot_say(model) -> None:
    problems = hf_config.check(model)
    if problems:
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise ShrinkValueError(
            f"the Hugging Face config of {type(model).__name__} cannot describe this compressed model: {shown}. "
            "A standard config has one width per kind for all layers: compress with uniform=True (the default "
            "for Hugging Face models), or keep this plan with shrink.save(result, folder) and "
            "shrink.load(folder, base_model)."
        )


def write_into(result, folder: Path, *, source: str | os.PathLike | None = None) -> list[str]:
    """The files of `save_pretrained`, written into an existing folder; returns the copied file names."""
    model = result.model
    _refuse_what_config_cannot_say(model)
    source = Path(source) if source is not None else _source_folder(model)
    model.save_pretrained(str(folder))
    copied = _copy_processor_files(source, folder) if source is not None else []
    doc = {
        "shrink_version": __version__,
        "torch_version": torch.__version__,
        "source": str(source) if source is not None else None,
        "copied": copied,
        "before": result.before.to_dict(),
        "after": result.after.to_dict(),
        **result.plan.to_dict(),
        "saved_as": "huggingface",
    }
    (folder / PLAN).write_text(json.dumps(doc, indent=1))
    log.info("wrote Hugging Face folder %s (%d tokenizer/processor files copied)", folder, len(copied))
    return copied


def _source_folder(model) -> Path | None:
    name = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    return Path(name) if name and Path(name).is_dir() else None


def _copy_processor_files(source: Path, folder: Path) -> list[str]:
    if not source.is_dir():
        raise ShrinkValueError(f"source={str(source)!r} is not a folder; pass the model folder it was loaded from")
    copied = []
    for name in _PROCESSOR_FILES:
        if (source / name).is_file() and not (folder / name).exists():
            shutil.copy2(source / name, folder / name)
            copied.append(name)
    return sorted(copied)
