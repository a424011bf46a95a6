"""Bundled data for examples and the demo: scikit-learn's handwritten digits (no download)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset


def digits(*, image: bool = True, seed: int = 0, val_fraction: float = 0.25):
    """The 1797 8x8 handwritten digits as (train, val) TensorDatasets, scaled to [0, 1].

    Args:
        image: shape samples as 1x8x8 images (for CNNs) instead of 64-vectors (for MLPs).
        seed: seed of the stratified split.
        val_fraction: share held out for validation.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    if image:
        x = x.view(-1, 1, 8, 8)
    idx_train, idx_val = train_test_split(range(len(y)), test_size=val_fraction, random_state=seed,
                                          stratify=data.target)
    return TensorDataset(x[idx_train], y[idx_train]), TensorDataset(x[idx_val], y[idx_val])


def digits_loaders(*, batch_size: int = 64, image: bool = True, seed: int = 0):
    """(train, val) DataLoaders over `digits`; the training loader shuffles with a seeded generator."""
    train, val = digits(image=image, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=g),
            DataLoader(val, batch_size=256))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def text_loaders(path, *, seq_len: int, vocab_size: int | None = None, tokenizer_folder=None, batch_size: int = 8,
                 val_fraction: float = 0.1):
    """(train, val) DataLoaders of ``(ids, ids)`` windows cut from a plain text file, for a language model.

    The text is tokenised with the Hugging Face tokenizer in ``tokenizer_folder`` when that folder
    has one (no special tokens added), else byte-level: each UTF-8 byte is one token id (0-255).
    The ids are cut into non-overlapping windows of ``seq_len`` tokens; the last ``val_fraction``
    of the windows (at least one) are the validation data, the rest the training data, in order.
    `shrink.evaluate(..., metric="perplexity")` reads these batches (the ids are their own labels).

    Raises:
        ShrinkValueError: a missing or unreadable file, text too short for two windows, or token ids
            the model's vocabulary (``vocab_size``) does not have.
    """
    from pathlib import Path

    from ..errors import ShrinkValueError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ShrinkValueError(f"--data {str(path)!r}: cannot read the text file: {exc}") from exc
    folder = Path(tokenizer_folder) if tokenizer_folder is not None else None
    if folder is not None and any((folder / name).is_file() for name in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        ids, how = tokenizer(text, add_special_tokens=False)["input_ids"], f"{type(tokenizer).__name__} of {folder}"
    else:
        ids, how = list(text.encode("utf-8")), "bytes (UTF-8, ids 0-255)"
    if vocab_size is not None and ids and max(ids) >= vocab_size:
        raise ShrinkValueError(
            f"--data {str(path)!r} tokenised as {how} has token id {max(ids)}, but the model's vocabulary has "
            f"{vocab_size} ids. Byte-level text needs a vocabulary of at least 256: give an --hf folder that holds "
            "the model's tokenizer, or loaders of token ids (--data package.module:loaders)."
        )
    windows = len(ids) // seq_len
    if windows < 2:
        raise ShrinkValueError(f"--data {str(path)!r} has {len(ids)} tokens ({how}): fewer than two windows of "
                               f"{seq_len} (the example input's length); give more text or a shorter --input")
    x = torch.tensor(ids[: windows * seq_len], dtype=torch.long).view(windows, seq_len)
    val = max(1, round(windows * val_fraction))
    train_x, val_x = x[: windows - val], x[windows - val:]
    return (DataLoader(TensorDataset(train_x, train_x), batch_size=batch_size),
            DataLoader(TensorDataset(val_x, val_x), batch_size=batch_size))
