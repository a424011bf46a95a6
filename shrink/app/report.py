"""The report a person pastes into a pull request: what was gained and what it cost."""

from __future__ import annotations

import json
import logging
from pathlib import Path


from .._util.versions import versions

log = logging.getLogger(__name__)


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


NO_DATA = "no --data given"


def summary(result, *, files: dict | None = None, quality: dict | None = None, bench=None) -> dict:
    """Numbers of the report as one JSON-able dict.

    ``quality``: ``{"metric", "stages": {stage: value}, "note", ...}`` as the job measured it; the
    report gives each stage a row with the size and latency of the model it was measured on.
    """
    doc = {
        "params": {"before": result.before.params, "after": result.after.params, "ratio": result.params_ratio},
        "macs": {"before": result.before.macs, "after": result.after.macs, "ratio": result.macs_ratio},
        "files_bytes": files or {},
        "importance": dict(getattr(result, "importance", None) or {"method": "l1"}),
        "quality": _quality(result, quality or {}, bench),
    }
    if bench is not None:
        doc["latency"] = [
            {"runtime": rt, "device": dev, "batch": b, "speedup": s, "efficiency": s / result.macs_ratio}
            for (rt, dev, b), s in sorted(bench.speedup("before", "after").items())
        ]
        # A pruned model slower than its original is the failure users hit most: never let it pass quietly.
        doc["warnings"] = [
            f"the compressed model is SLOWER than the original on {row['runtime']} {row['device']} batch "
            f"{row['batch']} (x{row['speedup']:.2f}); try round_to='auto' or a speed target (speedup=...)"
            for row in doc["latency"] if row["speedup"] < 1
        ] + [f"benchmark: {n}" for n in bench.notes]
    measured = getattr(result, "measured", None)
    if measured is not None:
        doc["measured"] = measured.to_dict()
    return doc


def _quality(result, quality: dict, bench) -> dict:
    """One row per measured stage: the metric beside the size (and p50 latency) of that model."""
    stages = quality.get("stages") or {}
    latency = {}
    if bench is not None:
        ok = [r for r in bench.rows if not r.skipped]
        where = min(((r.runtime, r.device, r.batch) for r in ok), default=None,
                    key=lambda k: (k[2], k[0] != "onnxruntime", k[1] != "cpu", k))
        latency = {r.model: r.p50_ms for r in ok if (r.runtime, r.device, r.batch) == where}
    rows = []
    for stage, value in stages.items():
        dense = stage == "dense"
        size = result.before if dense else result.after
        rows.append({"stage": stage, "value": value, "params": size.params, "macs": size.macs,
                     "p50_ms": latency.get("before" if dense else "after")})
    out = {k: v for k, v in quality.items() if k != "stages"}
    out["metric"] = quality.get("metric") or "accuracy"
    out["stages"] = rows
    if not rows:
        out["note"] = quality.get("note") or NO_DATA
    if latency:
        out["latency_at"] = dict(zip(("runtime", "device", "batch"), where))
    return out


def write(folder: str | Path, result, *, settings: dict, export=None, bench=None, quality: dict | None = None,
          history: list | None = None, files: dict | None = None, schedule: list | None = None) -> dict:
    """Write report.md, report.json and plots (widths.png, latency.png) into ``folder``."""
    folder = Path(folder)
    doc = summary(result, files=files, quality=quality, bench=bench)
    doc.update(settings=settings, versions=_versions(), widths=result.plan.widths,
               export=export.to_dict() if export else None, benchmark=bench.to_dict() if bench else None,
               history=history or [], schedule=schedule or [])
    (folder / "report.json").write_text(json.dumps(doc, indent=1, default=str))
    (folder / "report.md").write_text(_markdown(doc, result, export, bench))
    try:
        _widths_plot(folder / "widths.png", result.plan.widths)
        if bench is not None:
            bench.plot(folder / "latency.png")
    except ImportError:  # matplotlib is the optional [plots] extra
        log.warning("matplotlib is not installed: no plots written (pip install 'shrink[plots]')")
    return doc


def _versions() -> dict:
    return versions()


def _markdown(doc: dict, result, export, bench) -> str:
    p, m = doc["params"], doc["macs"]
    lines = ["# shrink report", ""]
    lines += [f"> **WARNING:** {w}" for w in doc.get("warnings", [])] + ([""] if doc.get("warnings") else [])
    if doc.get("measured"):
        t = doc["measured"]
        (kind, value), = t["target"].items()
        lines += ["## Target", "", f"Measured on {t['runtime']} {t['device']} batch {t['batch_size']}, "
                  f"dense and compressed timed in turn, {t['rounds']} round(s).", "",
                  "| target | predicted speed-up | measured speed-up (95% interval) | p50 dense → compressed | "
                  "spread p90/p50 | met |", "|---|---|---|---|---|---|",
                  f"| {kind}={value} | x{t['predicted_speedup']:.2f} | x{t['speedup']:.2f} ({t['speedup_low']:.2f}-"
                  f"{t['speedup_high']:.2f}) | {t['dense_p50_ms']:.3f} → {t['compressed_p50_ms']:.3f} ms | "
                  f"{t['dense_spread']:.2f} / {t['compressed_spread']:.2f} | {'yes' if t['met'] else 'no'} |", ""]
    elif doc.get("settings", {}).get("target"):
        goal = {k: v for k, v in doc["settings"]["target"].items() if k in ("macs", "params") and v is not None}
        for kind, value in goal.items():
            got = doc[kind]["after"] / doc[kind]["before"]
            lines += ["## Target", "", "| target | counted |", "|---|---|", f"| {kind} <= {value} | {got:.4f} |", ""]
    lines += ["| | before | after | ratio |", "|---|---|---|---|",
             f"| parameters | {_fmt(p['before'])} | {_fmt(p['after'])} | ÷{p['ratio']:.2f} |",
             f"| MACs (one forward on the example inputs) | {_fmt(m['before'])} | {_fmt(m['after'])} | ÷{m['ratio']:.2f} |"]
    for name, size in doc["files_bytes"].items():
        lines.append(f"| {name} size | | {size / 2**20:.2f} MiB | |")
    lines += _quality_section(doc)
    if bench is not None:
        lines += ["", "## Latency", "", "p50 before and after; efficiency = speed-up ÷ MAC reduction "
                  f"(÷{m['ratio']:.2f}); 1.0 means latency fell exactly as much as compute.", "",
                  "| runtime | device | batch | p50 before ms | p50 after ms | speed-up | efficiency |",
                  "|---|---|---|---|---|---|---|"]
        p50 = {(r.model, r.runtime, r.device, r.batch): r.p50_ms for r in bench.rows if not r.skipped}
        for row in doc["latency"]:
            key = (row["runtime"], row["device"], row["batch"])
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {p50[('before', *key)]:.3f} | {p50[('after', *key)]:.3f} | "
                         f"×{row['speedup']:.2f} | {row['efficiency']:.2f} |")
        skipped = sorted({f"{r.runtime}/{r.device}: {r.skipped}" for r in bench.rows if r.skipped})
        lines += [f"- skipped {s}" for s in skipped]
        lines += ["", "Machine: " + " · ".join(f"{k}: {v}" for k, v in bench.machine.items()
                                                if k != "onnxruntime_providers")]
    if export is not None:
        lines += ["", "## ONNX", "", f"`{Path(export.path).name}`: {export.exporter} exporter, opset {export.opset}, "
                  f"{export.file_bytes / 2**20:.2f} MiB, checked in ONNX Runtime at batch sizes "
                  f"{', '.join(map(str, export.batch_sizes))} (atol {export.atol:g}).", "",
                  "| output | shape | max abs diff | max rel diff |", "|---|---|---|---|"]
        lines += [f"| {o.name} | {'x'.join(map(str, o.shape))} | {o.max_abs_diff:.2e} | {o.max_rel_diff:.2e} |"
                  for o in export.outputs]
        lines += [""] + [f"- {n}" for n in export.notes] if export.notes else []  # float32 graph, no KV cache, ...
    if doc.get("schedule"):
        metric = doc["quality"]["metric"]
        lines += ["", "## Iterative schedule", "", f"| round | kept fraction | params | MACs | val {metric} |",
                  "|---|---|---|---|---|"]
        lines += [f"| {e['step']} | {e['kept_fraction']:.3f} | {_fmt(e['params'])} | {_fmt(e['macs'])} | "
                  + (f"{format_value(metric, e['metric'])} |" if "metric" in e else " |") for e in doc["schedule"]]
    if doc.get("history"):
        lines += ["", "## Fine-tuning", "", "| round | epoch | loss | val accuracy |", "|---|---|---|---|"]
        lines += [f"| {h.get('step', 1)} | {h['epoch']} | {h['loss']:.4f} | "
                  + (f"{h['val_accuracy']:.2%} |" if "val_accuracy" in h else " |") for h in doc["history"]]
    lines += _checks_section(result.plan)
    lines += ["", "## Layer widths", "", "| layer | outputs before → after | inputs before → after |", "|---|---|---|"]
    for name, dims in result.plan.widths.items():
        out = "{} → {}".format(*dims["out"]) if "out" in dims else ""
        inp = "{} → {}".format(*dims["in"]) if "in" in dims else ""
        lines.append(f"| {name} | {out} | {inp} |")
    lines += ["", "## Settings", "", "```json", json.dumps(doc["settings"], indent=1, default=str), "```",
              "", "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()), ""]
    return "\n".join(lines)


def format_value(metric: str, value: float) -> str:
    """A metric as the report prints it: accuracy in percent, perplexity to three decimals."""
    if metric == "accuracy":
        return f"{value:.2%}"
    return f"{value:.3f}" if metric == "perplexity" else f"{value:.4g}"


def _quality_section(doc: dict) -> list[str]:
    """The metric dense, after the cut and after recovery, beside size and latency; or why there is none."""
    q = doc["quality"]
    metric = q["metric"]
    lines = ["", "## Quality", ""]
    if not q["stages"]:
        return lines + [f"No {metric} rows: {q.get('note') or NO_DATA}. Pass --data (package.module:loaders "
                        "returning (train_loader, val_loader), or a text file for a language model) to measure "
                        "it dense, after the cut and after recovery."]
    at = q.get("latency_at")
    where = f" ({at['runtime']} {at['device']}, batch {at['batch']})" if at else ""
    ranked = doc.get("importance", {})
    cost = (f", calibration {ranked['batches']} batches in {ranked['seconds']:.2f} s"
            if "batches" in ranked else "")
    lines += [f"{metric} on {q.get('data') or 'the validation data'}; units ranked by "
              f"{ranked.get('method', 'l1')}{cost}.", "",
              f"| stage | {metric} | parameters | MACs | p50 ms{where} |", "|---|---|---|---|---|"]
    for row in q["stages"]:
        p50 = f"{row['p50_ms']:.3f}" if row.get("p50_ms") is not None else "not measured (--bench)"
        lines.append(f"| {row['stage']} | {format_value(metric, row['value'])} | {_fmt(row['params'])} | "
                     f"{_fmt(row['macs'])} | {p50} |")
    return lines


def _checks_section(plan) -> list[str]:
    """How the cuts were verified, and every group kept whole with the reason."""
    checks = plan.checks or {}
    exact, loose = checks.get("exact", []), checks.get("shape_only", [])
    lines = ["", "## Verification", "",
             f"- {len(exact)} cut(s) checked exactly: the cut model equals the original with the removed units "
             "masked, on the example inputs.",
             f"- {len(loose)} cut(s) checked for running and output shapes only (a LayerNorm-style layer mixes "
             "their channels, so masking is not the same function)" + (f": {', '.join(loose)}." if loose else ".")]
    boxes = checks.get("black_boxes", {})
    lines += [f"- traced as a black box (kept whole): `{name}`: {why}" for name, why in boxes.items()]
    if plan.kept_whole:
        lines += ["", "## Groups kept whole", "", "| group | reason |", "|---|---|"]
        lines += [f"| {name} | {why.replace('|', '/')} |" for name, why in plan.kept_whole.items()]
    return lines


def _widths_plot(path: Path, widths: dict) -> Path | None:
    layers = [(n, d["out"]) for n, d in widths.items() if "out" in d]
    if not layers:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(layers)), 4))
    x = np.arange(len(layers))
    ax.bar(x, [w[0] for _, w in layers], 0.8, label="before", color="#bbbbbb")
    ax.bar(x, [w[1] for _, w in layers], 0.5, label="after", color="#2a7ab9")
    ax.set_xticks(x)
    ax.set_xticklabels([n for n, _ in layers], rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    ax.set_title("Layer widths before and after")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
