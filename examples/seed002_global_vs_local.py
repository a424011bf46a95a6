"""Seed 002 on the bundled digits: global vs local L1 unstructured pruning at high sparsity,
reached by iterative prune + fine-tune, on a small residual CNN.

Per target sparsity and scope: 5 steps on the geometric schedule 1-(1-gamma)^k, 2 epochs of
fine-tuning after each. Then what masks do not give: the masked model is as big and as slow as
the dense one; `shrink.compact` removes only the units whose weights all became zero.
Writes examples/results/seed002.{md,json}. A few minutes on 2 cores.
"""

from __future__ import annotations

import copy
import json
import sys

import torch

import shrink
from shrink.app.data import digits_loaders
from shrink.zoo import DigitsNet

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import RESULTS, header  # noqa: E402

TARGETS = (0.8, 0.9, 0.95, 0.98)
STEPS, EPOCHS = 5, 2


def convs(name, module):
    return isinstance(module, torch.nn.Conv2d)


def main() -> None:
    torch.manual_seed(0)
    train, val = digits_loaders()
    dense = DigitsNet(width=32)
    shrink.fit(dense, train, epochs=15, lr=3e-3, progress=False)
    base = shrink.evaluate(dense, val)
    x = torch.randn(32, 1, 8, 8)
    rows = []
    for target in TARGETS:
        for scope in ("local", "global"):
            model = copy.deepcopy(dense)
            log = shrink.prune_iteratively(
                model, target, STEPS, scope=scope, filter_fn=convs,  # seed 002 pruned the convolutions
                finetune=lambda m, k: shrink.fit(m, train, epochs=EPOCHS, lr=1e-3, progress=False),
                evaluate=lambda m: shrink.evaluate(m, val))
            shrink.make_permanent(model)
            compacted = shrink.compact(model, x)
            rows.append({"target": target, "scope": scope, "sparsity": log[-1]["sparsity"],
                         "accuracy": log[-1]["metric"], "steps": log,
                         "params_dense": compacted.before.params, "params_after_compact": compacted.after.params,
                         "compact_kept": compacted.plan.settings["kept"]})
            print(f"target {target:.2f} {scope:6s}: conv sparsity {log[-1]['sparsity']:.4f}, "
                  f"accuracy {log[-1]['metric']:.2%}, params after compact "
                  f"{compacted.after.params:,} of {compacted.before.params:,}", flush=True)
    lines = ["# Seed 002 on the digits: global vs local L1 unstructured pruning, iterative", "", header(), "",
             f"DigitsNet (residual CNN, width 32) trained 15 epochs: accuracy {base:.2%} on {len(val.dataset)} "
             f"held-out digits. Each target reached in {STEPS} steps (geometric schedule), {EPOCHS} epochs of "
             "fine-tuning after each step; the convolutions are masked, the classifier is not.", "",
             "| target sparsity | scope | conv sparsity reached | accuracy | params after compact |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['target']:.2f} | {r['scope']} | {r['sparsity']:.4f} | {r['accuracy']:.2%} | "
              f"{r['params_after_compact']:,} / {r['params_dense']:,} |" for r in rows]
    (RESULTS / "seed002.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "seed002.json").write_text(json.dumps({"dense_accuracy": base, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
