"""Coverage on every architecture buildable here: shrink.zoo, the real-code fixtures, Hugging Face families.

Each model is compressed with default settings. Recorded: whether it compresses, runs and keeps
its output shapes; params removed; which groups compress kept whole itself (healing: a cut that
broke the model or failed the masking check) and how many trial cuts that took; and what healing
cost, measured as compress time minus the time of the same call with the healed groups passed as
``ignore=`` (what a user who knew in advance would pay). Writes benchmarks/results/coverage_local.{md,json}.

    .venv/bin/python benchmarks/coverage_local.py
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

_HEALED = ("fails", "differs", "could not be ranked", "mapping the cut", "cutting failed", "not cut")


def _models():
    import torch

    import hf_models
    import real_models
    from shrink import zoo

    g = torch.Generator().manual_seed(0)
    image = lambda size: torch.randn(1, 3, size, size, generator=g)  # noqa: E731
    for name in ("resnet18", "resnet50", "mobilenet_v2", "vgg11", "convnext_tiny"):
        yield f"zoo.{name}", getattr(zoo, name), lambda: image(64)
    yield "zoo.vit_small", zoo.vit_small, lambda: image(224)
    yield "zoo.transformer(4x256)", lambda: zoo.transformer(depth=4, dim=256, heads=4), \
        lambda: torch.randint(0, 1000, (1, 32), generator=g)
    for k, (build, inputs) in real_models.PATTERNS.items():
        yield f"pattern {k}: {build.__name__}", build, inputs
    for name, (build, inputs) in hf_models.FAMILIES.items():
        yield f"hf.{name}", build, inputs


def _compress(model, x, **kw):
    import shrink

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = shrink.compress(model, x, **kw)
    return result, time.perf_counter() - start


def main() -> None:
    import torch

    from _machine import header, machine

    torch.manual_seed(0)
    rows = []
    for name, build, inputs in _models():
        row: dict = {"model": name}
        try:
            model = build().eval()
            x = inputs()
            with torch.no_grad():
                dense = shrink_outputs(model, x)
            result, seconds = _compress(model, x)
            with torch.no_grad():
                cut = shrink_outputs(result.model, x)
            healed = {k: v for k, v in result.kept_whole.items() if any(w in v for w in _HEALED)}
            row.update(status="ok" if {k: v.shape for k, v in cut.items()} == {k: v.shape for k, v in dense.items()}
                       else "shape changed",
                       params_removed=round(1 - result.after.params / result.before.params, 3),
                       seconds=round(seconds, 2), trials=result.plan.checks.get("trials", 1),
                       healed=healed, black_boxes=sorted(result.plan.checks.get("black_boxes", {})),
                       exact=len(result.plan.checks["exact"]), shape_only=len(result.plan.checks["shape_only"]))
            if healed:
                _, known = _compress(build().eval(), x, ignore=sorted(healed))
                row["seconds_if_ignored"] = round(known, 2)
        except Exception as exc:  # noqa: BLE001
            row.update(status="error", error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        rows.append(row)
        print(f"{name:40s} {row['status']:8s} {row.get('params_removed', '')!s:6s} healed={len(row.get('healed', {}))} "
              f"trials={row.get('trials', '')} {row.get('error', '')[:80]}", flush=True)
    info = machine()
    out = HERE / "results"
    (out / "coverage_local.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    ok = [r for r in rows if r["status"] == "ok"]
    healed = [r for r in ok if r.get("healed")]
    lines = ["# Coverage on every architecture buildable here, compress() at default settings", "",
             header(info), "",
             f"**{len(ok)} of {len(rows)}** compress, run and keep their output shapes; {len(healed)} needed "
             "healing (compress kept a group whole itself after its cut broke the model or failed the masking check).",
             "", "| model | status | params removed | healed groups (why) | trials | compress s | s with those groups ignored | checked exact / shape only | black boxes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['status']}: {r.get('error', '')} | | | | | | | |")
            continue
        why = "; ".join(f"`{k}`: {v[:90]}" for k, v in r["healed"].items()).replace("|", "/")
        lines.append(f"| {r['model']} | ok | {r['params_removed']:.0%} | {why or '-'} | {r['trials']} | {r['seconds']} | "
                     f"{r.get('seconds_if_ignored', '')} | {r['exact']} / {r['shape_only']} | "
                     f"{', '.join(r['black_boxes']) or '-'} |")
    (out / "coverage_local.md").write_text("\n".join(lines) + "\n")


def shrink_outputs(model, x):
    """The outputs compress keeps the shape of (a task model's hidden states beside its logits follow the config)."""
    from shrink._util import inputs as _inputs

    return _inputs.task_outputs(_inputs.flatten_outputs(_inputs.run(model, x)))


if __name__ == "__main__":
    main()
