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

from .._util import inputs as _inputs
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
        folder: where to write: a new or empty folder, or any folder with ``overwrite=True``.
        overwrite: replace an existing folder that has files in it.
        source: the folder the un-pruned model was loaded from, for its tokenizer/processor
            files; by default the model's own ``name_or_path`` when that is a local folder.

    Returns:
        The folder's path; ``AutoModel*.from_pretrained(folder)`` loads the compressed model. Before
        it is handed over, the folder is loaded back with ``from_pretrained`` (on CPU, the same
        attention implementation) and its outputs compared with ``result.model``'s on look-alikes of
        the example inputs, the way `export_onnx` checks ONNX Runtime.

    Raises:
        ShrinkTypeError: the model is not a Hugging Face `PreTrainedModel`.
        ShrinkValueError: the config cannot describe the model (layers of one kind with different
            widths), or the folder loads back into a model that computes something else (a value
            derived from the config when the model is built, such as an embedding scale); the
            message names the tensor or config field that differs, and no folder is left.

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
    """The files of `save_pretrained`, written into an existing folder and read back (`read_back`);
    returns the copied file names."""
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
    read_back(result, folder)
    log.info("wrote Hugging Face folder %s (%d tokenizer/processor files copied), read back identical",
             folder, len(copied))
    return copied


def read_back(result, folder: Path) -> None:
    """Load ``folder`` with ``from_pretrained`` and check it computes what ``result.model`` does.

    Raises `ShrinkValueError` naming the output, and then the tensors (buffers included: a
    non-persistent one is rebuilt from the config) and config fields that differ.
    """
    model = result.model
    attention = getattr(model.config, "_attn_implementation", None)
    options = {"attn_implementation": attention} if attention else {}
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    try:
        loaded = _load(type(model), folder, dtype, options)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        raise ShrinkValueError(
            f"the folder written for {type(model).__name__} does not load back with from_pretrained: "
            f"{type(exc).__name__}: {exc}. Keep this plan with shrink.save(result, folder) and shrink.load."
        ) from exc
    example = _varied_ids(_inputs.from_spec(result.plan.inputs), model.config)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        want = _inputs.flatten_outputs(_inputs.run(model, _inputs.to(example, device)))
        got = _inputs.flatten_outputs(_inputs.run(loaded, example))
    differs = [name for name, w in want.items()
               if name not in got or got[name].shape != w.shape or not _close(got[name], w.detach().cpu())]
    if not differs:
        return
    causes = _what_differs(model, loaded)
    raise ShrinkValueError(
        f"the folder written for {type(model).__name__} loads back into a model that computes something else "
        f"({', '.join(differs[:3])} differ{'s' if len(differs) == 1 else ''}); "
        f"{'; '.join(causes[:4]) if causes else 'no tensor or config field differs by name'}. "
        "A value the model derives from its config when it is built does not follow the cut: keep that width "
        "whole (compress(..., ignore=[...])) or keep this plan with shrink.save(result, folder) and shrink.load."
    )


def _load(cls, folder: Path, dtype, options: dict):
    """``from_pretrained`` with the attention implementation the model runs; where the folder's
    classes refuse it by name (a sub-model that has no SDPA path: PP-OCR's backbones), with the
    one transformers picks for each, as a user loading the folder gets."""
    try:
        return cls.from_pretrained(str(folder), dtype=dtype, **options)
    except ValueError as exc:
        if not options or "attention implementation" not in str(exc):
            raise
        return cls.from_pretrained(str(folder), dtype=dtype)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not (a.is_floating_point() or a.is_complex()):
        return torch.equal(a, b)
    a, b = a.double(), b.double()
    if not (torch.isfinite(a) == torch.isfinite(b)).all():
        return False
    finite = torch.isfinite(b)
    scale = b[finite].abs().max().item() if finite.any() else 0.0
    return bool(((a - b)[finite].abs() <= 1e-4 * (1.0 + scale)).all())


def _varied_ids(example, config):
    """Look-alike inputs with token ids drawn at random: with every id the same, attention cannot tell
    positions apart and a wrong position table would compute the same outputs."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None)
    if not isinstance(example, dict) or not isinstance(vocab, int) or vocab < 2:
        return example
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randint(0, vocab, v.shape, generator=generator, dtype=v.dtype)
            if k.endswith("input_ids") and isinstance(v, torch.Tensor) and not v.is_floating_point() else v
            for k, v in example.items()}


def _what_differs(model, loaded) -> list[str]:
    """Tensors (parameters and every buffer) and config fields of two models that are not equal."""
    found = []
    mine = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    theirs = {**dict(loaded.named_parameters()), **dict(loaded.named_buffers())}
    for name, tensor in mine.items():
        other = theirs.get(name)
        if other is None:
            found.append(f"{name} is missing after the reload")
        elif other.shape != tensor.shape:
            found.append(f"{name}: {tuple(tensor.shape)} in memory, {tuple(other.shape)} after the reload")
        elif not _close(other.detach().cpu(), tensor.detach().cpu()):
            shown = f" ({tensor.item():.6g} -> {other.item():.6g})" if tensor.numel() == 1 else ""
            found.append(f"{name} changes on reload{shown}")
    before, after = model.config.to_dict(), loaded.config.to_dict()
    for key in sorted(set(before) | set(after)):
        if key.startswith("_") or key in ("transformers_version", "dtype", "torch_dtype"):
            continue
        if before.get(key) != after.get(key):
            found.append(f"config.{key}: {before.get(key)!r} in memory, {after.get(key)!r} after the reload")
    return found


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
