"""Speed targets on ONNX Runtime CPU: measured speed-up, MACs, params, compress time, and the L1
importance kept by the latency-aware allocation vs a uniform ratio at the same measured latency.

For each model x batch x target: compress(speedup=s) (first call measures the latency tables into a
fresh cache, so compress time includes them), then time dense, the target's model and three uniform
ratios interleaved in one `benchmark` call; the uniform ratio with the same latency is interpolated
(log latency vs ratio) and its kept importance computed from the same scores.
Digits: DigitsNet trained to convergence, cut to the same measured latency both ways, accuracy after
BN recalibration and after 5 epochs of distillation.

    python benchmarks/targets.py --models resnet18 mobilenet_v2 --batch 1 --speedups 2
    python benchmarks/targets.py --digits
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's shrink, not an installed one
import shrink  # noqa: E402
from shrink import zoo
from shrink.cut import graph
from shrink.target.space import build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, machine  # noqa: E402

HERE = Path(__file__).resolve().parent


def _bert():
    import transformers

    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                                  intermediate_size=2048, max_position_embeddings=512, num_labels=2)
    cfg._attn_implementation = "eager"
    return transformers.BertForSequenceClassification(cfg).eval()


def _img():
    return torch.randn(1, 3, 224, 224)


SUITE = {
    "resnet18": (zoo.resnet18, _img),
    "resnet50": (zoo.resnet50, _img),
    "mobilenet_v2": (zoo.mobilenet_v2, _img),
    "convnext_tiny": (zoo.convnext_tiny, _img),
    "vit_small": (zoo.vit_small, _img),
    "bert_small": (_bert, lambda: {"input_ids": torch.randint(0, 30522, (1, 128),
                                                              generator=torch.Generator().manual_seed(0))}),
}


def importance_share(space, keep) -> float:
    return sum(k.value(n) for k, n in zip(space.knobs, keep)) / sum(k.value(k.units) for k in space.knobs)


def weight_mass(model) -> float:
    """Sum of |w| over every convolution and linear weight (HF Conv1D included): the L1 mass a cut keeps.

    A weight survives a cut only if both its input and its output channel are kept, so a channel of a
    wide or large-kernel layer counts by all the weights it carries, not as one unit."""
    from shrink.layers.rows import is_hf_conv1d

    total = 0.0
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)) or is_hf_conv1d(m):
            total += float(m.weight.detach().abs().double().sum())
    return total


def keep_of(space, ratios: dict) -> list[int]:
    return [k.units - math.floor(ratios.get(k.name, 0.0) * k.units + 1e-9) for k in space.knobs]


def uniform_keep(space, r: float) -> list[int]:
    return [max(1, k.units - math.floor(r * k.units + 1e-9)) if k.kind == "channels"
            else max(1, k.units - min(math.floor(r * k.units + 1e-9), k.units - 1)) for k in space.knobs]


def run_one(name, batch, speedup, out_rows):
    factory, make = SUITE[name]
    torch.manual_seed(0)
    dense, x = factory().eval(), make()
    space = build(graph.trace(copy.deepcopy(dense), x), x)
    started = time.perf_counter()
    try:
        r = shrink.compress(dense, x, speedup=speedup, batch_size=batch)
        error = ""
    except shrink.ShrinkError as exc:
        r, error = None, str(exc)
    seconds = time.perf_counter() - started
    row = {"model": name, "batch": batch, "target": speedup, "compress_s": seconds, "error": error,
           "load_1min": os.getloadavg()[0]}
    if r is not None:
        m = r.measured
        keep = keep_of(space, r.plan.settings["widths_kept"] or {})
        ratios = [0.3, 0.5, 0.65] if speedup <= 2 else [0.45, 0.6, 0.75]
        models = {"dense": dense, "target": r.model}
        for u in ratios:
            models[f"u{u}"] = shrink.compress(dense, x, ratio=u).model
        dense_mass = weight_mass(dense)
        mass = {k: weight_mass(v) / dense_mass for k, v in models.items()}
        rep = shrink.benchmark(models, x, runtimes=("onnxruntime",), devices=("cpu",), batch_sizes=(batch,),
                               progress=False)
        p50 = {row_.model: row_.p50_ms for row_ in rep.rows}
        # Latency relative to dense: the median of per-round ratios of interleaved calls (a burst of
        # load hits both calls of a round), not a ratio of p50s taken over the whole run.
        paired = {k[0]: v for k, v in rep.intervals.items() if k[1] == "dense"}
        rel = {name_: paired[name_][1] if name_ in paired else p50[name_] / p50["dense"] for name_ in p50}
        lat = [math.log(rel[f"u{u}"]) for u in ratios]
        target_lat = math.log(rel["target"])
        # latency falls as the ratio grows: interpolate the ratio with the target's latency
        order = np.argsort(lat)
        u_same = float(np.interp(target_lat, np.array(lat)[order], np.array(ratios)[order]))
        row.update({
            "measured_speedup": m.speedup, "speedup_interval": [m.speedup_low, m.speedup_high],
            "predicted_speedup": m.predicted_speedup, "rounds": m.rounds, "met": m.met,
            "dense_p50_ms": m.dense_p50_ms, "compressed_p50_ms": m.compressed_p50_ms,
            "dense_spread": m.dense_spread, "compressed_spread": m.compressed_spread,
            "macs_ratio": r.macs_ratio, "params_ratio": r.params_ratio,
            "mac_efficiency": m.speedup / r.macs_ratio,
            "importance_target": importance_share(space, keep),
            "uniform_ratio_same_latency": u_same,
            "importance_uniform": importance_share(space, uniform_keep(space, u_same)),
            # parameter-weighted: share of the dense model's L1 weight mass still in the cut model
            "mass_target": mass["target"],
            "mass_uniform": float(np.interp(u_same, ratios, [mass[f"u{u}"] for u in ratios])),
            "mass_uniform_points": {f"{u}": mass[f"u{u}"] for u in ratios},
            "macs_uniform": float(np.interp(u_same, ratios, [shrink.count(models[f"u{u}"], x).macs for u in ratios])),
            "uniform_p50_ms": {f"{u}": p50[f"u{u}"] for u in ratios}, "recheck_p50_ms": p50,
            "relative_latency_paired": rel, "same_latency_by": "paired",
            "bench_notes": list(rep.notes),
        })
    out_rows.append(row)
    return row


def line(r) -> str:
    if r.get("error"):
        return f"| {r['model']} | {r['batch']} | x{r['target']} | not met: {r['error'][:300]} | | | | | | | {r['compress_s']:.0f}{_load(r)} |"
    return (f"| {r['model']} | {r['batch']} | x{r['target']} | x{r['measured_speedup']:.2f} "
            f"({r['speedup_interval'][0]:.2f}-{r['speedup_interval'][1]:.2f}) | x{r['predicted_speedup']:.2f} | "
            f"{r['dense_p50_ms']:.2f} → {r['compressed_p50_ms']:.2f} | ÷{r['macs_ratio']:.2f} (eff {r['mac_efficiency']:.2f}) | "
            f"÷{r['params_ratio']:.2f} | {_mass(r)}{r['importance_target']:.3f} vs {r['importance_uniform']:.3f} "
            f"(uniform ratio {r['uniform_ratio_same_latency']:.2f}) | {r['compress_s']:.0f}{_load(r)} |")


def _load(r) -> str:
    return f" (load {r['load_1min']:.1f})" if "load_1min" in r else ""


def uniform_mass(r) -> tuple[float | None, str]:
    """The uniform side of the weight-mass comparison, and how it was chosen.

    Interpolated at the target's latency where the uniform cuts' latency falls as the ratio grows;
    where it does not (MobileNetV2 on ORT: some widths are slow, a smaller cut can be slower), the
    best uniform cut measured no slower than the target instead."""
    rel, pts = r.get("relative_latency_paired"), r.get("mass_uniform_points")
    if not rel or not pts:
        return r["mass_uniform"], ""
    us = sorted(pts, key=float)
    lats = [rel[f"u{u}"] for u in us]
    if all(a > b for a, b in zip(lats, lats[1:])):
        return r["mass_uniform"], ""
    faster = [u for u in us if rel[f"u{u}"] <= rel["target"]]
    if not faster:
        return None, "no uniform cut measured as fast"
    u = min(faster, key=float)
    return pts[u], f"uniform latency not monotone in ratio ({', '.join(f'{k} {rel[chr(117) + k]:.2f}' for k in us)} of dense); best uniform no slower: ratio {u}"


def _mass(r) -> str:
    if "mass_target" not in r:
        return "| "
    m, how = uniform_mass(r)
    if m is None:
        return f"**{r['mass_target']:.3f}** vs - ({how}) | "
    return f"**{r['mass_target']:.3f} vs {m:.3f}**{' (' + how + ')' if how else ''} | "


def digits(rows_out):
    from shrink.app.data import digits_loaders
    from shrink.recover.train import evaluate, fit, recalibrate_bn

    torch.manual_seed(0)
    train, val = digits_loaders(seed=0)
    model = zoo.DigitsNet(width=32)
    fit(model, train, epochs=15, lr=3e-3, progress=False)
    model.eval()
    base = evaluate(model, val)
    x = torch.randn(1, 1, 8, 8)
    batch = 32
    out = {"dense_accuracy": base, "batch": batch}
    r = shrink.compress(model, x, speedup=2, batch_size=batch)
    ratios = [0.3, 0.5, 0.7]
    uni = {u: shrink.compress(model, x, ratio=u) for u in ratios}
    rep = shrink.benchmark({"dense": model, "target": r.model, **{f"u{u}": v.model for u, v in uni.items()}}, x,
                           runtimes=("onnxruntime",), devices=("cpu",), batch_sizes=(batch,), progress=False)
    p50 = {row.model: row.p50_ms for row in rep.rows}
    lat = [math.log(p50[f"u{u}"]) for u in ratios]
    order = np.argsort(lat)
    u_same = round(float(np.interp(math.log(p50["target"]), np.array(lat)[order], np.array(ratios)[order])), 3)
    uniform = shrink.compress(model, x, ratio=u_same)
    check = shrink.benchmark({"target": r.model, "uniform": uniform.model}, x, runtimes=("onnxruntime",),
                             devices=("cpu",), batch_sizes=(batch,), progress=False)
    out.update({"measured_speedup": r.measured.speedup, "uniform_ratio": u_same,
                "p50_ms": {row.model: row.p50_ms for row in check.rows}, "notes": list(check.notes)})
    for label, res in (("latency-aware", r), ("uniform", uniform)):
        m = copy.deepcopy(res.model)
        acc_cut = evaluate(m, val)
        recalibrate_bn(m, train)
        acc_bn = evaluate(m, val)
        fit(m, train, epochs=5, lr=1e-3, teacher=model, progress=False)
        out[label] = {"after_cut": acc_cut, "after_bn": acc_bn, "after_5_epochs_distill": evaluate(m, val),
                      "macs_ratio": res.macs_ratio, "params_ratio": res.params_ratio}
    rows_out.append(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(SUITE))
    parser.add_argument("--batch", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--speedups", nargs="*", type=float, default=[2.0, 3.0])
    parser.add_argument("--digits", action="store_true")
    parser.add_argument("--name", default="targets_cpu")
    parser.add_argument("--rewrite", action="store_true", help="re-render results/NAME.md from its JSON")
    args = parser.parse_args()
    if args.rewrite:
        path = HERE / "results" / f"{args.name}.md"
        doc = json.loads(path.with_suffix(".json").read_text())
        if not doc.get("end_load"):  # older JSON: the load at its last write is in the table
            import re

            found = re.search(r"at this write: `([^`]*)`", path.read_text())
            doc["end_load"] = found.group(1) if found else "not recorded"
        return _write(path, doc["rows"], doc["digits"], doc["machine"], doc["load"], args, doc.get("seconds"),
                      doc.get("end_load"))
    os.environ.setdefault("SHRINK_CACHE_DIR", tempfile.mkdtemp(prefix="shrink-bench-cache-"))  # first call: cold
    info = machine()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows, dig = [], []
    out_md = HERE / "results" / f"{args.name}.md"
    started = time.perf_counter()
    if args.digits:
        print(json.dumps(digits(dig), indent=1), flush=True)
    for batch in args.batch:  # most useful first: every model at batch 1, speedup 2
        for s in args.speedups:
            for name in args.models:
                print(line(run_one(name, batch, s, rows)), flush=True)
                _write(out_md, rows, dig, info, load, args, time.perf_counter() - started)
    _write(out_md, rows, dig, info, load, args, time.perf_counter() - started)


def _write(path, rows, dig, info, load, args, seconds, end_load=None):
    end_load = end_load or subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = ["# Speed targets on ONNX Runtime CPU", "", header(info), "",
             f"Load at start: `{load}`; at this write: `{end_load}`. The machine's 2 cores were shared with other "
             "agents' jobs while this ran, so every latency is noisy; the interval beside each speed-up is the 95% "
             "interval of the per-round ratio from interleaved calls.", "",
             f"Images 224x224, BERT-small (4 layers, 512 wide, 8 heads) at sequence 128. compress time includes "
             f"measuring the latency tables into an empty cache (each run of this script starts with an empty "
             f"cache, so a model's first row at a batch size measures all its tables; a later row of the same "
             f"model and batch, e.g. speedup=3 after speedup=2, reuses them). "
             + (f"Run took {seconds:.0f} s." if seconds else ""), "",
             "Two importance columns, both comparing the target's cut with a uniform ratio at the *same measured "
             "latency* (the uniform ratio is interpolated between three uniform cuts timed together with the "
             "target's model):", "",
             "- **L1 weight mass kept** (the honest one): sum of |w| over every conv/linear weight of the cut "
             "model ÷ the same over the dense model. A weight survives only if both its input and output "
             "channel are kept, so a channel of a big layer counts by all the weights it carries. The uniform "
             "side is interpolated (linearly in the ratio) between the three uniform cuts' measured masses.",
             "- **allocation's own estimate**: the value the allocation maximises, as a share of its value at "
             "full width: each group's weight mass (its layers' weights, on the side it narrows) times the share "
             "of its L1 scores kept. It adds the loss of both sides of a layer where the true loss is "
             "1 - (1 - a)(1 - b), so it under-states what narrowing two coupled groups keeps. (Tables written "
             "before 2026-11-22 05:00 UTC have the older objective here: per-group mean-normalised scores, "
             "which count a channel of a 16-wide layer as much as one of a 2048-wide layer.)",
             "", "The models carry random initial weights (no trained checkpoints can be downloaded here), so "
             "per-channel L1 scores are nearly flat: neither column says anything about accuracy; the first "
             "one measures how much of the network (by weight mass) survives at that latency.", "",
             "Same latency: each uniform cut's latency relative to dense is the median of per-round ratios of "
             "interleaved calls (rows whose JSON lacks `same_latency_by` used ratios of p50s), and the uniform "
             "ratio matching the target's relative latency is interpolated in log latency. Under this load "
             "a row's interpolation can still be off (see `relative_latency_paired` in the JSON).", "",
             "| model | batch | target | measured speed-up (95%) | predicted | p50 ms dense → cut | MACs (eff = "
             "speed-up ÷ MAC ratio) | params | L1 weight mass kept: target vs uniform | allocation's estimate: "
             "target vs uniform | compress s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [line(r) for r in rows]
    if dig:
        d = dig[0]
        lines += ["", "## Digits demo model (DigitsNet width 32, 15 epochs), ONNX Runtime CPU batch "
                  f"{d['batch']}", "",
                  f"Dense accuracy {d['dense_accuracy']:.4f}. Target speedup=2 measured x{d['measured_speedup']:.2f}; "
                  f"uniform ratio {d['uniform_ratio']} was interpolated to the same latency from three uniform cuts; "
                  f"re-timed together: {', '.join(f'{k} {v:.3f} ms' for k, v in d['p50_ms'].items())} (a sub-ms "
                  f"model: the two can differ by more than the cut does).", "",
                  "| cut | MACs | params | accuracy after cut | after BN recalibration | after 5 epochs distillation |",
                  "|---|---|---|---|---|---|"]
        for label in ("latency-aware", "uniform"):
            a = d[label]
            lines.append(f"| {label} | ÷{a['macs_ratio']:.2f} | ÷{a['params_ratio']:.2f} | {a['after_cut']:.4f} | "
                         f"{a['after_bn']:.4f} | {a['after_5_epochs_distill']:.4f} |")
        lines += [f"**Note:** {n}" for n in d["notes"]]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"machine": info, "load": load, "rows": rows, "digits": dig,
                                                     "seconds": seconds, "end_load": end_load}, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
