"""Why a MAC reduction does not become the same speed-up: the latency that does not shrink with width.

For each model: uniform cuts at ratios up to 0.9 (MACs ÷40 and more), timed against dense in one
interleaved `benchmark` call on ONNX Runtime CPU. The latency left at ratio 0.9 bounds the part of
the model's time that no width reduces (per-node costs of the runtime, the stem and classifier
kept whole, element-wise ops). With a floor F of a dense time T, a measured speed-up S needs the
rest (T - F) to shrink by (T - F) / (T/S - F), so the best efficiency (speed-up ÷ MAC ratio, with
latency above the floor proportional to MACs) at S is about (T - S*F) / (T - F).

    python benchmarks/floor.py --models mobilenet_v2 convnext_tiny --batch 1 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's shrink
import shrink  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, machine  # noqa: E402
from targets import SUITE  # noqa: E402

HERE = Path(__file__).resolve().parent
RATIOS = (0.5, 0.8, 0.9)


def run(name: str, batches, rows: list) -> None:
    factory, make = SUITE[name]
    torch.manual_seed(0)
    dense, x = factory().eval(), make()
    models, macs = {"dense": dense}, {"dense": shrink.count(dense, x).macs}
    for r in RATIOS:
        cut = shrink.compress(dense, x, ratio=r)
        models[f"ratio {r}"], macs[f"ratio {r}"] = cut.model, cut.after.macs
    for b in batches:
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        rep = shrink.benchmark(models, x, runtimes=("onnxruntime",), devices=("cpu",), batch_sizes=(b,),
                               progress=False)
        p50 = {row.model: row.p50_ms for row in rep.rows}
        spread = {row.model: row.spread for row in rep.rows}
        t, floor = p50["dense"], p50[f"ratio {RATIOS[-1]}"]
        rows.append({"model": name, "batch": b, "p50_ms": p50, "spread": spread, "macs": macs, "load": load,
                     "floor_share": floor / t,
                     "best_eff_at": {s: (t - s * floor) / (t - floor) if t > floor else None for s in (1.5, 2, 3)},
                     "notes": list(rep.notes)})
        print(json.dumps(rows[-1]), flush=True)


def write(rows, info, seconds) -> None:
    lines = ["# The latency that does not shrink with width (ONNX Runtime CPU)", "", header(info), "",
             f"Uniform cuts timed together with dense, interleaved (`shrink.benchmark`, 2 threads). Load is "
             f"recorded per row: the machine's 2 cores were shared with other agents, so figures are noisy. "
             + (f"Run took {seconds:.0f} s." if seconds else ""), "",
             "Efficiency = speed-up ÷ MAC ratio. `floor` F = latency at ratio 0.9 ÷ dense latency T: an upper "
             "bound on the part of the time no cut removes. `proportional eff at xS` = (T − S·F)/(T − F): the "
             "efficiency a cut reaching xS would have if everything above the floor scaled with MACs. It is a "
             "guide, not a bound: narrow layers can fall faster than their MACs (caches, fast widths), which is "
             "what a latency-aware allocation looks for (see targets_cpu_*.md).", "",
             "| model | batch | dense ms | ratio 0.5: ms (speed-up, MACs ÷, eff) | ratio 0.8 | ratio 0.9 | floor "
             "| proportional eff at x1.5 / x2 / x3 | load |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["p50_ms"]["dense"]
        cells = []
        for k in RATIOS:
            ms = r["p50_ms"][f"ratio {k}"]
            mr = r["macs"]["dense"] / r["macs"][f"ratio {k}"]
            cells.append(f"{ms:.2f} (x{t / ms:.2f}, ÷{mr:.1f}, eff {t / ms / mr:.2f})")
        best = " / ".join(f"{v:.2f}" if v is not None else "-" for v in r["best_eff_at"].values())
        load = r["load"].split("load average:")[-1].strip()
        lines.append(f"| {r['model']} | {r['batch']} | {t:.2f} | {' | '.join(cells)} | {r['floor_share']:.2f} | "
                     f"{best} | {load} |")
    out = HERE / "results" / "floor_cpu.md"
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": rows, "seconds": seconds}, indent=1,
                                                   default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["mobilenet_v2", "convnext_tiny"])
    parser.add_argument("--batch", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--rewrite", action="store_true", help="re-render the table from floor_cpu.json")
    args = parser.parse_args()
    if args.rewrite:
        doc = json.loads((HERE / "results" / "floor_cpu.json").read_text())
        return write(doc["rows"], doc["machine"], doc.get("seconds"))
    info, rows, started = machine(), [], time.perf_counter()
    for name in args.models:
        run(name, args.batch, rows)
        write(rows, info, time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
