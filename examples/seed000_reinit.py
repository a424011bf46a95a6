"""Seed 000: one-shot neuron pruning of a 5-layer MLP (2-20-18-16-14-2) by the L1 norm of each
neuron's weights, at ratio 0.2, then retraining with the kept weights taken from the trained model,
from the initial weights (lottery-ticket rewind), or at random. Synthetic 2-D data (two moons).

Writes examples/results/seed000.{md,json}. About a minute on 2 cores.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys

import torch
import torch.nn.functional as F
from torch import nn

import shrink

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import RESULTS, header  # noqa: E402

SEEDS = range(5)
EPOCHS = 300


def data(seed: int):
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split

    x, y = make_moons(n_samples=1000, noise=0.25, random_state=seed)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=seed)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(xt), f(xv), torch.tensor(yt), torch.tensor(yv)


def mlp() -> nn.Sequential:
    sizes = (2, 20, 18, 16, 14, 2)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train(model, xt, yt, epochs=EPOCHS):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)  # the seed's full-batch Adam
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model


def accuracy(model, xv, yv) -> float:
    with torch.no_grad():
        return float((model(xv).argmax(1) == yv).float().mean())


def main() -> None:
    results = {k: [] for k in ("dense", "pruned, no retraining", "trained", "initial", "random")}
    for seed in SEEDS:
        torch.manual_seed(seed)
        xt, xv, yt, yv = data(seed)
        model = mlp()
        initial = copy.deepcopy(model.state_dict())
        train(model, xt, yt)
        results["dense"].append(accuracy(model, xv, yv))
        for reinit in ("trained", "initial", "random"):
            cut = shrink.compress(model, xt[:4], ratio=0.2, reinit=reinit, initial_state=initial, seed=seed)
            if reinit == "trained":
                results["pruned, no retraining"].append(accuracy(cut.model, xv, yv))
                widths = [m.out_features for m in cut.model if isinstance(m, nn.Linear)]
            results[reinit].append(accuracy(train(cut.model, xt, yt), xv, yv))
    lines = ["# Seed 000: one-shot neuron pruning at ratio 0.2, three ways to retrain", "", header(), "",
             f"MLP 2-20-18-16-14-2 on two moons (1000 points, noise 0.25, 30% held out), {EPOCHS} full-batch Adam "
             f"epochs (lr 0.01) before and after pruning; widths after pruning: {widths}. Mean ± std over "
             f"{len(SEEDS)} seeds.", "",
             "| model | held-out accuracy |", "|---|---|"]
    for name, accs in results.items():
        lines.append(f"| {name} | {statistics.mean(accs):.2%} ± {statistics.stdev(accs):.2%} |")
    (RESULTS / "seed000.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "seed000.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
