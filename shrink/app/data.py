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
