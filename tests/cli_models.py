"""Factories the CLI tests name as ``cli_models:...``."""

from models import TinyMLP


def mlp():
    return TinyMLP((4, 32, 16, 3))


def wider_mlp():
    return TinyMLP((4, 40, 16, 3))


def loaders():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=16), DataLoader(data, batch_size=64)
