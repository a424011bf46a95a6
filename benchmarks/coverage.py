"""Coverage on architectures nobody here wrote: one small model per family of timm (and torchvision).

For each family, the smallest-looking model is built with random weights and compressed with
default settings (ratio 0.5) in a fresh subprocess with a time limit. Recorded: whether compress
returned a model that runs and keeps its output shapes, the share of parameters removed, the MAC
ratio, the groups kept whole (and why, summarised), the modules traced as black boxes, how the
cuts were verified, and compress time. Writes benchmarks/results/coverage.{md,json}.

timm and torchvision are not dependencies of shrink. Install them beside the venv, not into it
(torchvision's wheels register kernels that this CPU build of torch lacks, and an installed
torchvision breaks transformers' imports):

    .venv/bin/pip install --no-deps --target .bench-pkgs torchvision==0.28.0 timm
    .venv/bin/python benchmarks/coverage.py [--only resnet,vit] [--timeout 300]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PKGS = ROOT / ".bench-pkgs"
sys.path.insert(0, str(HERE))

_SMALL = ["atto", "femto", "pico", "nano", "tiny", "xxs", "xs", "mini", "small", "s0", "b0", "t0", "_t", "_s",
          "18", "_050", "_100", "_s1", "_a0", "lite", "base"]
_BIG = ["large", "huge", "giant", "gigantic", "xl", "xxl", "_l", "_h", "_g", "448", "384", "512", "_e_", "so400",
        "clip", "dinov", "sam", "siglip", "_m_", "1024", "big"]


def import_vision_libs():
    """Import torchvision and timm from .bench-pkgs, skipping torchvision's fake kernels for C++ ops."""
    import torch.library

    if str(PKGS) not in sys.path:
        sys.path.insert(0, str(PKGS))
    real = torch.library.register_fake

    def register_fake(op, func=None, /, *args, **kwargs):
        if "torchvision::" in str(op):
            return func if func is not None else (lambda f: f)
        return real(op, func, *args, **kwargs) if func is not None else real(op, *args, **kwargs)

    torch.library.register_fake = register_fake
    import timm
    import torchvision

    return timm, torchvision


def _size_rank(name: str) -> tuple:
    small = next((i for i, t in enumerate(_SMALL) if t in name), len(_SMALL))
    big = sum(t in name for t in _BIG)
    return (big, small, len(name), name)


def families(timm) -> dict[str, str]:
    """family (timm module) -> the smallest-looking model name in it."""
    from timm.models import _registry

    by_module: dict[str, list[str]] = {}
    for name in timm.list_models():
        by_module.setdefault(_registry._model_to_module.get(name, "?"), []).append(name)
    return {module: min(names, key=_size_rank) for module, names in sorted(by_module.items())}


def _shapes(out, top: bool = True):
    """The output's structure with every tensor replaced by its shape (dicts, tuples and lists kept).

    A task model's hidden states beside its logits (a seq2seq model's encoder_last_hidden_state)
    are left out, as compress does: their width follows the config after a cut."""
    import torch

    from shrink._util.inputs import task_outputs

    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, dict):
        keep = task_outputs(dict.fromkeys(out)) if top else out
        return {k: _shapes(v, False) for k, v in out.items() if k in keep}
    if isinstance(out, (tuple, list)):
        return [_shapes(v, False) for v in out]
    return type(out).__name__


def compress_row(name: str, build, signature=_shapes, then=None) -> dict:
    """Build ``(model, inputs)`` with ``build()``, run it dense, compress at ratio 0.5, and describe the result.

    The output shapes must stay the same (compared as ``signature(output)``). ``then(model, result,
    inputs) -> dict``, when given, adds fields to a row whose model compressed (reload, ONNX checks).

    A model that cannot build or run dense here is "skipped" (with the reason): that is no failure of shrink.
    """
    import warnings

    import torch

    import shrink

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("SHRINK_BENCH_THREADS", "2")))
    row: dict = {"model": name}
    try:
        model, x = build()
        args = x if isinstance(x, tuple) else (x,)
        with torch.no_grad():
            dense_out = model(*args)
    except Exception as exc:  # noqa: BLE001 - the dense model itself does not build/run here
        row.update(status="skipped", error=f"dense model: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        return row
    row["input"] = str(_shapes(list(args)))[1:-1].replace(", ", "x").replace(")x(", ", ").replace("(", "").replace(")", "")
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = shrink.compress(model, x, ratio=0.5)
    except Exception as exc:  # noqa: BLE001
        row.update(status="error", seconds=round(time.perf_counter() - start, 2),
                   error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        return row
    row["seconds"] = round(time.perf_counter() - start, 2)
    try:
        with torch.no_grad():
            out = result.model(*args)
        shapes_ok = signature(out) == signature(dense_out)
    except Exception as exc:  # noqa: BLE001 - compress returned a model that does not run
        row.update(status="error", error=f"the returned model fails: {type(exc).__name__}: {str(exc)[:200]}")
        return row
    removed = 1 - result.after.params / result.before.params
    reasons: dict[str, int] = {}
    for reason in result.kept_whole.values():
        key = re.sub(r"'[^']*'", "'…'", reason.split(":")[0])[:70]
        reasons[key] = reasons.get(key, 0) + 1
    checks = result.plan.checks
    row.update(
        status="ok" if shapes_ok else "shape changed",
        params_before=result.before.params, params_after=result.after.params,
        params_removed=round(removed, 3), macs_ratio=round(result.macs_ratio, 2),
        kept_whole=len(result.kept_whole), kept_reasons=reasons,
        black_boxes=sorted(checks.get("black_boxes", {})),
        exact=len(checks.get("exact", [])), shape_only=len(checks.get("shape_only", [])),
    )
    if then is not None:
        row.update(then(model, result, x))
    return row


def _one(name: str) -> dict:
    """Compress one timm model (runs in a subprocess)."""
    import torch

    def build():
        timm, _ = import_vision_libs()
        model = timm.create_model(name, pretrained=False).eval()
        return model, torch.randn(1, *model.pretrained_cfg.get("input_size", (3, 224, 224)))

    return compress_row(name, build)


def arguments(description: str, unit: str = "family") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--only", help=f"comma-separated {unit} names")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--jobs", type=int, default=1, help="models compressed side by side (1 thread each if > 1)")
    parser.add_argument("--update", action="store_true",
                        help=f"with --only: replace those {unit} rows in the committed table, keep the rest")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    return parser


def sweep(script: str, chosen: dict[str, str], args, parser, info: dict, stem: str, write) -> None:
    """Run ``script --one NAME`` for every ``{key: NAME}`` in a subprocess with a time limit, writing as rows come.

    Rows carry ``family`` = key; with ``--update`` the other keys' rows are kept from results/STEM.json.
    """
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    rows = []
    if args.update:
        if not args.only:
            parser.error("--update needs --only NAME[,NAME]")
        previous = json.loads((out / f"{stem}.json").read_text())
        rows = [r for r in previous["rows"] if r["family"] not in chosen]
        info["updated"] = f"{', '.join(sorted(chosen))} re-run later than the other rows (same machine)"
    env = {**os.environ, "SHRINK_BENCH_THREADS": "1" if args.jobs > 1 else "2"}
    info["threads_per_model"] = int(env["SHRINK_BENCH_THREADS"])
    info["models_side_by_side"] = args.jobs

    def run(item):
        family, name = item
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, script, "--one", name], capture_output=True, text=True,
                                  timeout=args.timeout, cwd=ROOT, env=env)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("ROW ")), None)
            row = json.loads(line[4:]) if line else {
                "model": name, "status": "crashed", "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
        except subprocess.TimeoutExpired:
            row = {"model": name, "status": "timeout", "error": f"no answer within {args.timeout:g} s"}
        row["family"] = family
        row["wall_s"] = round(time.perf_counter() - start, 1)
        return row

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        for row in pool.map(run, chosen.items()):
            rows.append(row)
            print(f"{row['family']:28s} {row['status']:14s} {row.get('params_removed', '')!s:6s} "
                  f"{row.get('error', '')[:90]}", flush=True)
            write(sorted(rows, key=lambda r: r["family"]), info, out)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    args = parser.parse_args()
    if args.one:
        print("ROW " + json.dumps(_one(args.one)))
        return
    timm, _ = import_vision_libs()
    chosen = families(timm)
    if args.only:
        keep = set(args.only.split(","))
        chosen = {k: v for k, v in chosen.items() if k in keep}
    from _machine import machine

    info = machine()
    info["timm"] = timm.__version__
    sweep(__file__, chosen, args, parser, info, "coverage", _write)


def _write(rows: list[dict], info: dict, out: Path, *, stem: str = "coverage",
           title: str = "one small model per timm family", first: str = "family", unit: str = "families") -> None:
    from _machine import header

    counted = [r for r in rows if r["status"] != "skipped"]
    ok = [r for r in counted if r["status"] == "ok"]
    third = [r for r in ok if r.get("params_removed", 0) >= 1 / 3]
    (out / f"{stem}.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    lines = [
        f"# Coverage: {title}, compress(ratio=0.5) at default settings",
        "",
        header(info),
        "",
        f"**{len(ok)} of {len(counted)}** {unit} compress, run and keep their output shapes "
        f"({len(rows) - len(counted)} skipped: the dense model does not build or run here); "
        f"{len(third)} of them lose at least a third of their parameters.",
        "",
        f"| {first} | model | status | params removed | MACs ÷ | groups kept whole (why) | black boxes | checked exact / shape only | compress s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        why = "; ".join(f"{k} ×{n}" for k, n in sorted(r.get("kept_reasons", {}).items(), key=lambda kv: -kv[1]))
        word = "cannot run here" if r["status"] == "skipped" else r["status"]
        status = word if r["status"] == "ok" else f"{word}: {r.get('error', '')}"
        lines.append(
            f"| {r.get(first, '')} | {r['model']} | {status.replace('|', '/')} | "
            f"{r['params_removed']:.0%} | {r['macs_ratio']} | {r['kept_whole']}: {why.replace('|', '/')} | "
            f"{', '.join(r['black_boxes']) or '-'} | {r['exact']} / {r['shape_only']} | {r['seconds']} |"
            if r["status"] == "ok" else
            f"| {r.get(first, '')} | {r['model']} | {status.replace('|', '/')} | | | | | | {r.get('seconds', '')} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
