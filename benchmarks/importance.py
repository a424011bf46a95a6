"""Data-aware ranking vs L1 on the digits CNN: accuracy dense, after the cut and after a short fit.

The demo's residual CNN (`shrink.zoo.DigitsNet`, width 32) trained on scikit-learn's digits as the
demo trains it, then cut at ratio 0.5 (every group loses half its channels: MACs ÷4) by each of
shrink's importances (l1, l2, activation, taylor; the data-aware ones on the first 8 training
batches of 64) and by torch-pruning's own importance classes run on the same model through
``tp.pruner.MetaPruner`` at the same ratio (the classifier kept whole, as shrink keeps outputs).
Every cut model has the same widths, so the same latency (measured once, ONNX Runtime CPU batch
1, for all of them together). Each is then measured right after the cut, after BatchNorm
recalibration on the training data, and after a short distillation from the dense model
(``--epochs`` epochs, lr 1e-3, one run per ``--seeds`` seed, mean and range).

    python benchmarks/importance.py            # a few CPU minutes
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's shrink
import shrink  # noqa: E402
from shrink import zoo  # noqa: E402
from shrink.app.data import digits_loaders  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
RATIO = 0.5
CALIBRATION_BATCHES = 8


def shrink_cut(model, x, importance, calibration):
    started = time.perf_counter()
    result = shrink.compress(model, x, ratio=RATIO, importance=importance,
                             calibration=calibration if importance in ("activation", "taylor") else None)
    return result.model, {"seconds": time.perf_counter() - started, **result.importance}


def tp_cut(model, x, name, calibration):
    """torch-pruning's MetaPruner with one of its importance classes, on a copy of ``model``."""
    import torch.nn.functional as F
    import torch_pruning as tp

    work = copy.deepcopy(model).eval()
    importance = {
        "tp MagnitudeImportance(p=1, first layer)": lambda: tp.importance.MagnitudeImportance(
            p=1, group_reduction="first", normalizer=None),
        "tp GroupMagnitudeImportance (group L2, DepGraph)": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "tp TaylorImportance": lambda: tp.importance.TaylorImportance(),
        "tp ActivationImportance": lambda: tp.importance.ActivationImportance(),
    }[name]()
    started = time.perf_counter()
    pruner = tp.pruner.MetaPruner(work, x, importance=importance, pruning_ratio=RATIO, ignored_layers=[work.fc])
    if isinstance(importance, tp.importance.TaylorImportance):
        work.zero_grad()
        for xb, yb in calibration:  # the same batches and loss as shrink's taylor
            F.cross_entropy(work(xb), yb).backward()
    if isinstance(importance, tp.importance.ActivationImportance):
        with importance.compute_importance(work), torch.no_grad():
            for xb, _ in calibration:
                work(xb)
    pruner.step()
    work.zero_grad(set_to_none=True)
    return work, {"seconds": time.perf_counter() - started, "method": name}


def run(args) -> dict:
    torch.manual_seed(0)
    train, val = digits_loaders(seed=0)
    dense = zoo.DigitsNet(width=32)
    shrink.fit(dense, train, epochs=15, lr=3e-3, progress=False)  # as the demo trains it
    dense.eval()
    x = torch.randn(1, 1, 8, 8)
    calibration = [batch for batch, _ in zip(train, range(CALIBRATION_BATCHES))]
    base = shrink.evaluate(dense, val)
    out = {"dense_accuracy": base, "dense": shrink.count(dense, x).to_dict(), "rows": [], "ratio": RATIO,
           "epochs": args.epochs, "seeds": args.seeds, "val_images": len(val.dataset),
           "calibration_batches": CALIBRATION_BATCHES, "calibration_batch_size": train.batch_size}
    methods = [("shrink", m) for m in ("l1", "l2", "activation", "taylor")] + [("tp", m) for m in (
        "tp MagnitudeImportance(p=1, first layer)", "tp GroupMagnitudeImportance (group L2, DepGraph)",
        "tp TaylorImportance", "tp ActivationImportance")]
    models = {}
    for kind, method in methods:
        try:
            cut, cost = (shrink_cut if kind == "shrink" else tp_cut)(dense, x, method, calibration)
        except Exception as exc:  # noqa: BLE001 - a method that does not run on this model is reported
            out["rows"].append({"method": method, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(out["rows"][-1], flush=True)
            continue
        size = shrink.count(cut, x)
        row = {"method": method, "cost": cost, "macs_ratio": out["dense"]["macs"] / size.macs,
               "params_ratio": out["dense"]["params"] / size.params, "after_cut": shrink.evaluate(cut, val)}
        bn = copy.deepcopy(cut)
        shrink.recalibrate_bn(bn, train)
        row["after_bn"] = shrink.evaluate(bn, val)
        fitted = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            m = copy.deepcopy(bn)
            shrink.fit(m, train, epochs=args.epochs, lr=1e-3, teacher=dense, progress=False)
            fitted.append(shrink.evaluate(m, val))
        row["after_fit"] = fitted
        models[method] = cut
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    rep = shrink.benchmark({"dense": dense, **models}, x, runtimes=("onnxruntime",), devices=("cpu",),
                           batch_sizes=(1,), progress=False)
    out["p50_ms"] = {r.model: r.p50_ms for r in rep.rows if not r.skipped}
    out["bench_notes"] = list(rep.notes)
    return out


def write(out: dict, info: dict, seconds: float) -> None:
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    lines = [f"# Importance on the digits CNN: ratio {out['ratio']} (MACs ÷4), accuracy before and after", "",
             header(info), "",
             f"`shrink.zoo.DigitsNet(width=32)` trained 15 epochs (as `shrink demo`), dense accuracy "
             f"**{out['dense_accuracy']:.2%}** on {out['val_images']} held-out digits (one image = "
             f"{1 / out['val_images']:.2%}). Data-aware rankings calibrate on the first "
             f"{out['calibration_batches']} training batches of {out['calibration_batch_size']}. After the cut: "
             f"as cut; after BatchNorm recalibration on the training data; after {out['epochs']} epochs of "
             f"distillation from the dense model (lr 1e-3), mean (min-max) over {out['seeds']} seed(s). "
             f"torch-pruning {info.get('torch_pruning', '?')} runs its classes through `MetaPruner` at the "
             "same ratio, the classifier ignored. p50: ONNX Runtime CPU batch 1, all models timed in one "
             "interleaved `shrink.benchmark` call; every cut model has the same widths (same MACs), so the "
             "spread of their p50 is measurement noise on a shared 2-core machine: compare them at equal "
             f"latency. Whole run {seconds:.0f} s.", "",
             "| ranking | MACs | params | p50 ms | ranking s | after cut | + BN recalibration | "
             f"+ {out['epochs']} epochs distilled | loss after fit vs dense |",
             "|---|---|---|---|---|---|---|---|---|"]
    p50 = out.get("p50_ms", {})
    lines.append(f"| dense | ÷1.00 | ÷1.00 | {p50.get('dense', float('nan')):.3f} | | "
                 f"{out['dense_accuracy']:.2%} | | | |")
    for row in out["rows"]:
        if "error" in row:
            lines.append(f"| {row['method']} | does not run: {row['error'][:120]} | | | | | | | |")
            continue
        fit = row["after_fit"]
        lines.append(
            f"| {row['method']} | ÷{row['macs_ratio']:.2f} | ÷{row['params_ratio']:.2f} | "
            f"{p50.get(row['method'], float('nan')):.3f} | {row['cost']['seconds']:.2f} | {row['after_cut']:.2%} | "
            f"{row['after_bn']:.2%} | {mean(fit):.2%} ({min(fit):.2%}-{max(fit):.2%}) | "
            f"{(mean(fit) - out['dense_accuracy']) * 100:+.2f} points |")
    lines += ["", "Notes: " + ("; ".join(out.get("bench_notes", [])) or "none"), ""]
    (HERE / "results" / "importance.md").write_text("\n".join(lines))
    (HERE / "results" / "importance.json").write_text(json.dumps({"machine": info, "seconds": seconds, **out},
                                                                 indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    out = run(args)
    write(out, machine(), time.perf_counter() - started)
    print((HERE / "results" / "importance.md").read_text())


if __name__ == "__main__":
    main()
