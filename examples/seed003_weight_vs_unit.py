"""Seed 003 on the bundled digits: weight pruning (masks) vs unit pruning (physical cut).

An MLP without biases, as in the seed (64-256-256-128-64-10 here; 784-1000-1000-500-200-10 on
MNIST there), trained on scikit-learn's 8x8 digits, then pruned at seed 003's ratios by both
methods without retraining. Writes examples/results/seed003.{md,json,png}. A few minutes on 2 cores.
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn

import shrink
from shrink.app.data import digits_loaders

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import RESULTS, header  # noqa: E402


class Net(nn.Module):
    def __init__(self, sizes=(64, 256, 256, 128, 64, 10)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def main() -> None:
    torch.manual_seed(0)
    train, val = digits_loaders(image=False)
    model = Net()
    shrink.fit(model, train, epochs=30, lr=1e-3, progress=False)
    report = shrink.sweep(model, lambda m: shrink.evaluate(m, val), example_inputs=torch.randn(64, 64))
    (RESULTS / "seed003.md").write_text(
        "# Seed 003 on the digits: weight pruning vs unit pruning (no retraining)\n\n" + header() + "\n\n"
        "weight: per-layer L1 unstructured masks, every layer; unit: shrink.compress (L2 unit norm, "
        "seed 003's metric; the classifier's outputs kept). p50: PyTorch eager, batch 64.\n\n"
        + report.to_markdown())
    (RESULTS / "seed003.json").write_text(json.dumps(report.to_dict(), indent=1))
    report.plot(RESULTS / "seed003.png")
    print(report.to_markdown())


if __name__ == "__main__":
    main()
