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


def flipped():
    """A channel flip the tracer maps as element-wise: cutting conv1 runs but computes something else."""
    import torch
    from torch import nn

    class Flipped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 2)

        def forward(self, x):
            x = torch.relu(self.conv2(torch.relu(self.conv1(x)).flip(1)))
            return self.fc(x.mean((2, 3)))

    return Flipped()


def byte_lm():
    """A language model over bytes (256 token ids): embedding, one hidden layer, logits per position."""
    import torch
    from torch import nn

    class ByteLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.hidden, self.out = nn.Embedding(256, 16), nn.Linear(16, 32), nn.Linear(32, 256)

        def forward(self, ids):
            return self.out(torch.relu(self.hidden(self.embed(ids))))

    return ByteLM()


def small_vocab_lm():
    """A language model whose 50-token vocabulary cannot read byte-level text."""
    from torch import nn

    return nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 50))
