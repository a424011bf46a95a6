"""compress time and peak memory: shrink against raw torch-pruning on the same models.

Each measurement runs in a fresh subprocess (peak RSS is per process). Extra memory is the
peak resident set during the call minus the resident set just before it, reported as a multiple
of the model's own bytes. Writes benchmarks/results/compress_time.{md,json}.

    python benchmarks/compress_time.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MODELS = {"resnet50": "1x3x224x224", "transformer-24x768": "int64:1x128"}


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(field)


def _build(name: str):
    import torch

    from shrink import zoo

    torch.manual_seed(0)
    if name == "resnet50":
        return zoo.resnet50().eval(), torch.randn(1, 3, 224, 224), "fc"
    return zoo.transformer(depth=24, dim=768).eval(), torch.randint(0, 1000, (1, 128)), "head"


def _raw_torch_pruning(model, x, head_name):
    import torch_pruning as tp
    from torch import nn

    num_heads = {m.qkv: m.num_heads for m in model.modules() if hasattr(m, "qkv")}
    pruner = tp.pruner.BasePruner(
        model, x,
        importance=tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None),
        pruning_ratio=0.5,
        ignored_layers=[getattr(model, head_name)],
        num_heads=num_heads, prune_num_heads=bool(num_heads), prune_head_dims=False, head_pruning_ratio=0.5,
        root_module_types=[nn.Conv2d, nn.Linear],
    )
    pruner.step()
    for m in model.modules():  # the attribute fix-up a raw torch-pruning user writes by hand
        if hasattr(m, "qkv"):
            m.num_heads = pruner.num_heads[m.qkv]
    return model


def child(name: str, tool: str) -> dict:
    import torch

    import shrink

    torch.set_num_threads(2)
    model, x, head = _build(name)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad():
        model(x)  # warm allocator and kernels before measuring
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident set
    rss0 = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    if tool == "shrink":
        out = shrink.compress(model, x, ratio=0.5).model
    elif tool == "shrink-inplace":
        out = shrink.compress(model, x, ratio=0.5, inplace=True).model
    else:
        out = _raw_torch_pruning(model, x, head)
    seconds = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    with torch.no_grad():
        out(x)
    return {
        "model": name, "tool": tool, "seconds": seconds,
        "extra_mb": (peak - rss0) / 1024, "model_mb": model_bytes / 2**20,
        "extra_x_model": (peak - rss0) * 1024 / model_bytes,
        "params_after": shrink.cut.measure.count_params(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    from _machine import header, machine

    rows = []
    for name in MODELS:
        for tool in ("torch-pruning", "shrink-inplace", "shrink"):
            runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", name, tool], check=True,
                                              capture_output=True, text=True).stdout.strip().splitlines()[-1])
                    for _ in range(args.repeats)]
            row = dict(runs[0])
            row["seconds"] = statistics.median(r["seconds"] for r in runs)
            row["extra_mb"] = statistics.median(r["extra_mb"] for r in runs)
            row["extra_x_model"] = statistics.median(r["extra_x_model"] for r in runs)
            rows.append(row)
            print(f"{name:20s} {tool:15s} {row['seconds']:6.2f} s  +{row['extra_mb']:7.0f} MB "
                  f"({row['extra_x_model']:.2f}x model)", flush=True)
    info = machine()
    info["torch_threads"] = 2
    tp_time = {r["model"]: r["seconds"] for r in rows if r["tool"] == "torch-pruning"}
    lines = [
        "# compress time and memory: shrink vs raw torch-pruning", "",
        header(info), "",
        f"ratio 0.5, L1 ranking, batch-1 example inputs ({', '.join(f'{k}: {v}' for k, v in MODELS.items())}); "
        f"median of {args.repeats} fresh processes; extra = peak RSS during the call minus RSS before it.", "",
        "| model | tool | seconds | × torch-pruning time | extra MB | extra × model bytes | params after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} ({r['model_mb']:.0f} MB) | {r['tool']} | {r['seconds']:.2f} | "
                     f"{r['seconds'] / tp_time[r['model']]:.2f} | {r['extra_mb']:.0f} | {r['extra_x_model']:.2f} | "
                     f"{r['params_after'] / 1e6:.2f} M |")
    lines += ["", "`shrink` (inplace=False) deep-copies the model first so the caller's model is untouched; "
              "`shrink-inplace` cuts the given model, as torch-pruning does."]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "compress_time.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "compress_time.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
