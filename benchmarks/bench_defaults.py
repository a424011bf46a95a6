"""Wall time of `shrink.benchmark` with its default iteration counts: ResNet-50, batch 32, 224x224,
PyTorch eager and ONNX Runtime on CPU (the goal: under a minute on 2 cores). Writes
benchmarks/results/bench_defaults.{md,json}.

    python benchmarks/bench_defaults.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's shrink
import shrink  # noqa: E402
from shrink import zoo  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import header, machine  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    torch.manual_seed(0)
    model, x = zoo.resnet50().eval(), torch.randn(1, 3, 224, 224)
    started = time.perf_counter()
    rep = shrink.benchmark({"resnet50": model}, x, runtimes=("torch", "onnxruntime"), devices=("cpu",),
                           batch_sizes=(32,), progress=True)
    seconds = time.perf_counter() - started
    lines = ["# benchmark() with default iteration counts: ResNet-50, batch 32, 224x224, CPU", "", header(machine()), "",
             f"Load at start: `{load}` (the 2 cores were shared with other agents' jobs). Wall time of the whole "
             f"call, ONNX export included: **{seconds:.0f} s**.", "", rep.to_markdown()]
    (HERE / "results" / "bench_defaults.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "bench_defaults.json").write_text(json.dumps({"seconds": seconds, "load": load,
                                                                       **rep.to_dict()}, indent=1, default=str))
    print(f"{seconds:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
