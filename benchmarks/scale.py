"""Peak memory of compress on LLaMA-shaped language models in bf16, against the model's own bytes.

Each row runs in a fresh subprocess: build a ``LlamaForCausalLM`` from its config on the meta
device, materialise it in bf16 with random weights, then ``shrink.compress(model, ids,
ratio=0.5)`` (``inplace=True`` and the default ``inplace=False``). Peak RSS is the process's
``VmHWM`` after the call, with the peak reset just before it (``/proc/self/clear_refs``); it
includes the model itself and the interpreter. ``peak × model`` = peak RSS / model bytes (the
issue's goal for ``inplace=True`` is ≤ 1.25 on an 8B-shaped model); ``extra × model`` = (peak −
RSS before the call) / model bytes. The 8B shape is Llama-3-8B's widths (hidden 4096, MLP 14336,
32 heads, 8 key/value heads, vocabulary 128256), also at 2 and 8 layers: the embedding and LM head
(2 GB) do not shrink with depth, so fewer layers is the harder case for the ratio; ``copy`` of the
whole 8B needs two models' memory. Writes benchmarks/results/scale.{md,json}.

    python benchmarks/scale.py                        # 8B widths at 2 and 8 layers, and the 1B shape, both modes
    python benchmarks/scale.py --shapes 8b --modes inplace   # the whole 8B shape (15 GiB; needs ~17 GiB free)
    python benchmarks/scale.py --merge OUT.json ...   # one table from several runs' json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHAPE_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 128256}
# Llama 3.2 1B / 3B and Llama 3 8B (their published configs' widths), and the 8B widths at fewer layers.
SHAPES = {
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    "3b": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    "8b": {**SHAPE_8B, "num_hidden_layers": 32},
    **{f"8b-{n}l": {**SHAPE_8B, "num_hidden_layers": n} for n in (2, 8)},
}


def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(shape: str, mode: str, tokens: int) -> dict:
    import torch
    import transformers

    import shrink

    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**SHAPES[shape])
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.model.rotary_emb.__init__(config)  # the rotary frequencies to_empty left uninitialised
    build_s = time.perf_counter() - t0
    model_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    ids = torch.randint(0, config.vocab_size, (1, tokens))
    open("/proc/self/clear_refs", "w").write("5")
    rss0 = _status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    result = shrink.compress(model, ids, ratio=0.5, inplace=(mode == "inplace"))
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM") * 1024
    return {
        "shape": shape, "layers": config.num_hidden_layers, "mode": mode,
        "params_before": result.before.params, "params_after": result.after.params,
        "model_gib": model_bytes / 2**30, "rss_before_gib": rss0 / 2**30, "peak_gib": peak / 2**30,
        "peak_x_model": peak / model_bytes, "extra_x_model": (peak - rss0) / model_bytes,
        "seconds": seconds, "build_seconds": build_s, "dtype": str(next(result.model.parameters()).dtype),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["8b-2l", "8b-8l", "1b"], choices=sorted(SHAPES))
    parser.add_argument("--modes", nargs="+", default=["inplace", "copy"], choices=["inplace", "copy"])
    parser.add_argument("--tokens", type=int, default=8, help="example sequence length")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale")
    parser.add_argument("--merge", nargs="+", type=Path, help="write one table from these runs' .json instead")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.tokens)))
        return
    from _machine import machine

    if args.merge:
        runs = [json.loads(path.read_text()) for path in args.merge]
        _write(args.out, [r for run in runs for r in run["rows"]],
               [m for run in runs for m in run.get("machines", [run.get("machine")])], args.tokens)
        return
    rows = []
    for shape in args.shapes:
        for mode in args.modes:
            done = subprocess.run([sys.executable, __file__, "--child", shape, mode, "--tokens", str(args.tokens)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
                rows.append({"shape": shape, "mode": mode, "error": f"exit {done.returncode}: {tail}"})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    info = machine()
    info["torch_threads"] = 2
    _write(args.out, rows, [info], args.tokens)


def _write(out: Path, rows: list[dict], machines: list[dict], tokens: int) -> None:
    from _machine import header

    shapes = {r["shape"] for r in rows}
    lines = ["# compress peak memory on LLaMA-shaped bf16 models", ""]
    lines += [header(info) for info in machines]
    lines += [
        "",
        "Shapes: " + "; ".join(f"{k}: " + ", ".join(f"{a} {b}" for a, b in v.items()) for k, v in SHAPES.items()
                               if k in shapes) + ". bf16, random weights, "
        f"`compress(ratio=0.5)` on one example row of {tokens} tokens, one fresh process per row. "
        "peak = VmHWM during the call (model and interpreter included); extra = peak − RSS before the call.", "",
        "| shape | layers | params | model GiB | mode | peak GiB | peak × model | extra × model | params after | "
        "dtype after | compress s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['shape']} | | | | {r['mode']} | {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['shape']} | {r['layers']} | {r['params_before'] / 1e9:.2f} B | {r['model_gib']:.2f} | "
                     f"{r['mode']} | {r['peak_gib']:.2f} | {r['peak_x_model']:.2f} | {r['extra_x_model']:.2f} | "
                     f"{r['params_after'] / 1e9:.2f} B | {r['dtype']} | {r['seconds']:.0f} |")
    lines += ["", "`inplace`: `compress(..., inplace=True)`, the model as it was spilled to a temporary file to retry "
              "from; `copy`: the default, which cuts a deep copy and leaves the caller's model untouched."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machines": machines, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
