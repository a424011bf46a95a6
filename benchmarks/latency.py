"""Latency before and after compress, over a suite of architectures, ratios and runtimes.

For each model: build it, compress at each ratio, export dense and shrunk to ONNX (parity-checked),
then time PyTorch eager and ONNX Runtime at each batch size. Efficiency = speed-up ÷ MAC ratio
(1.0: latency fell exactly as much as compute). Writes benchmarks/results/latency_<device>.{md,json}.

    python benchmarks/latency.py                  # CPU, batch 1 and 32
    python benchmarks/latency.py --device cuda --batch 1 --batch 64 --runtime torch-fp16
    python benchmarks/latency.py --models resnet18 --ratios 0.5 --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import shrink
from shrink import zoo

HERE = Path(__file__).resolve().parent
IMAGE = 128  # 224 is the usual ImageNet size; 128 keeps the CPU suite within minutes on 2 cores


def _bert():
    import transformers

    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                                  intermediate_size=2048, max_position_embeddings=128, num_labels=2)
    cfg._attn_implementation = "eager"
    return transformers.BertForSequenceClassification(cfg).eval()


def _ids():
    return {"input_ids": torch.randint(0, 30522, (1, 64), generator=torch.Generator().manual_seed(0))}


SUITE = {
    "resnet18": (zoo.resnet18, lambda: torch.randn(1, 3, IMAGE, IMAGE), True),
    "resnet50": (zoo.resnet50, lambda: torch.randn(1, 3, IMAGE, IMAGE), True),
    "mobilenet_v2": (zoo.mobilenet_v2, lambda: torch.randn(1, 3, IMAGE, IMAGE), True),
    "vgg11": (zoo.vgg11, lambda: torch.randn(1, 3, IMAGE, IMAGE), True),
    "vit_small": (lambda: zoo.ViT(image=IMAGE, patch=16, dim=384, depth=12, heads=6), lambda: torch.randn(1, 3, IMAGE, IMAGE), False),
    "bert_small": (_bert, _ids, False),
}


def _variants(ratios, conv, round_tos):
    out = [(r, None) for r in ratios]
    if conv:  # odd widths can fall off fast kernels (ORT's NCHWc blocks are 8 or 16 channels wide)
        out += [(r, n) for n in round_tos for r in ratios if r == 0.5 or len(ratios) <= 2]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(SUITE))
    parser.add_argument("--ratios", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--runtime", action="append", choices=["torch", "torch-fp16", "onnxruntime"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", action="append", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--quick", action="store_true", help="few iterations, to check the script runs")
    parser.add_argument("--round-to", nargs="*", type=int, default=[8], help="round_to variants for conv nets")
    parser.add_argument("--name", default="", help="suffix of the results file")
    args = parser.parse_args()
    runtimes = tuple(args.runtime or ("torch", "onnxruntime"))
    batches = tuple(args.batch or (1, 32))
    results, started = [], time.perf_counter()
    out_md = HERE / "results" / f"latency_{args.device}{'_' + args.name if args.name else ''}.md"
    out_md.parent.mkdir(exist_ok=True)
    for name in args.models:
        factory, make_inputs, conv = SUITE[name]
        torch.manual_seed(0)
        dense, x = factory().eval(), make_inputs()
        with tempfile.TemporaryDirectory() as tmp:
            models = {"dense": dense}
            parity = {"dense": shrink.export_onnx(dense, x, Path(tmp) / "dense.onnx").max_rel_diff}
            sizes = {}
            for ratio, round_to in _variants(args.ratios, conv, args.round_to):
                key = f"{ratio}" + (f" r{round_to}" if round_to else "")
                result = shrink.compress(dense, x, ratio=ratio, round_to=round_to)
                models[key] = result.model
                sizes[key] = result
                parity[key] = shrink.export_onnx(result.model, x, Path(tmp) / f"{len(parity)}.onnx").max_rel_diff
            for batch in batches:
                iters = 5 if args.quick else (50 if batch == 1 else 10)
                rep = shrink.benchmark(models, x, runtimes=runtimes, devices=(args.device,), batch_sizes=(batch,),
                                       threads=args.threads, warmup=3 if batch > 1 else 10, iters=iters, progress=False)
                speed = {k: rep.speedup("dense", k) for k in sizes}
                p50 = {(r.model, r.runtime): r.p50_ms for r in rep.rows if not r.skipped}
                for key, result in sizes.items():
                    for rt in runtimes:
                        s = speed[key].get((rt, args.device, batch))
                        row = {
                            "model": name, "variant": key, "runtime": rt, "device": args.device, "batch": batch,
                            "threads": rep.machine["threads"],
                            "params_before": result.before.params, "params_after": result.after.params,
                            "macs_before": result.before.macs, "macs_after": result.after.macs,
                            "mac_ratio": result.macs_ratio,
                            "p50_before_ms": p50.get(("dense", rt)), "p50_after_ms": p50.get((key, rt)),
                            "speedup": s, "efficiency": s / result.macs_ratio if s else None,
                            "parity_rel_diff": max(parity["dense"], parity[key]),
                            "skipped": next((r.skipped for r in rep.rows if r.model == key and r.runtime == rt
                                             and r.skipped), ""),
                        }
                        results.append(row)
                        print(_line(row), flush=True)
            _write(out_md, results, rep.machine, args, time.perf_counter() - started)


def _line(r: dict) -> str:
    if r["speedup"] is None:
        return f"| {r['model']} | {r['variant']} | {r['runtime']} | {r['batch']} | skipped: {r['skipped']} |"
    return (f"| {r['model']} | {r['variant']} | {r['runtime']} | {r['batch']} | "
            f"{r['params_before'] / 1e6:.2f} M → {r['params_after'] / 1e6:.2f} M | "
            f"{r['macs_before'] / 1e9:.3f} G → {r['macs_after'] / 1e9:.3f} G | ÷{r['mac_ratio']:.2f} | "
            f"{r['p50_before_ms']:.2f} | {r['p50_after_ms']:.2f} | ×{r['speedup']:.2f} | {r['efficiency']:.2f} | "
            f"{r['parity_rel_diff']:.1e} |")


def _write(path: Path, rows: list, machine: dict, args, seconds: float) -> None:
    head = " · ".join(f"{k}: {v}" for k, v in machine.items() if k != "onnxruntime_providers")
    lines = [f"# Latency before and after ({args.device})", "", head, "",
             f"Images {IMAGE}x{IMAGE}, BERT sequence 64; p50 of {'5' if args.quick else '50 (batch 1) / 10 (larger)'} "
             f"timed calls after warm-up; variant = ratio (rN: round_to=N); efficiency = speed-up ÷ MAC ratio; "
             f"parity = worst relative max difference of the dense and shrunk ONNX files against PyTorch. "
             f"Suite took {seconds:.0f} s.", "",
             "| model | variant | runtime | batch | params | MACs | MAC ratio | p50 before ms | p50 after ms | "
             "speed-up | efficiency | parity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_line(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"machine": machine, "image": IMAGE, "rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
