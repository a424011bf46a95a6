"""`benchmark`: latency before and after, in PyTorch eager and ONNX Runtime, on CPU and CUDA.

Timing is honest by construction: warm-up iterations first, then one measurement per call
(``perf_counter`` on CPU; CUDA events on the GPU, synchronised), the models of one configuration
timed call by call in turn so that before and after share the machine's conditions, percentiles
over those, the thread count set and written beside each row, and rows that cannot run reported
as skipped with the reason instead of silently missing.

Noise is reported, not hidden: each row carries its spread (p90/p50), and each model is compared
with the first one through the per-round ratio of their interleaved calls, whose median has a 95%
interval (order statistics). When that interval neither excludes 1 nor is narrow, the two models
cannot be ranked: with automatic iteration counts more rounds are taken (up to 4x), and if that
does not settle it the report carries a note saying so instead of a misleading speed-up.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._util.clone import clone
from .._util import inputs as _inputs
from .._util import checks
from .._util.progress import progress_bar
from ..errors import ShrinkTypeError, ShrinkValueError
from .export import export_onnx, input_names
from .timing import interleaved, rankable, ratio_interval, settle  # noqa: F401 - rankable, ratio_interval re-exported

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "torch-fp16", "onnxruntime")
NOISY_SPREAD = 1.3  # p90/p50 above this: other load on the machine
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class BenchRow:
    """One timed configuration.

    Attributes:
        model, runtime, device, batch, threads: what was timed.
        p50_ms, p90_ms, p99_ms, mean_ms: latency of one call, milliseconds.
        items_per_s: batch / mean latency.
        iters: timed iterations (after warm-up).
        skipped: why the row could not run; empty when it ran.
        spread: p90 / p50 (1.0 is perfectly steady; above ~1.3 the machine was busy).
    """

    model: str
    runtime: str
    device: str
    batch: int
    threads: int
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    mean_ms: float = float("nan")
    items_per_s: float = float("nan")
    iters: int = 0
    skipped: str = ""
    spread: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def machine_info() -> dict:
    """The facts every latency figure needs beside it."""
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class BenchReport:
    """Latency rows and the machine they were measured on.

    Attributes:
        rows: one `BenchRow` per model x runtime x device x batch size.
        machine: CPU model, core count, versions, GPU if any.
        intervals: (model, first model, runtime, device, batch) -> (low, median, high): 95%
            interval of the per-round latency ratio model/first, from the interleaved calls.
        notes: warnings about the measurement (too noisy to rank two models, a busy machine).
    """

    rows: tuple[BenchRow, ...]
    machine: dict = field(default_factory=dict)
    intervals: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def speedup(self, a: str, b: str) -> dict[tuple[str, str, int], float]:
        """p50 of model ``a`` divided by p50 of model ``b``, per (runtime, device, batch) both ran."""
        p50 = {(r.model, r.runtime, r.device, r.batch): r.p50_ms for r in self.rows if not r.skipped}
        return {
            key[1:]: p50[key] / p50[(b, *key[1:])]
            for key in p50
            if key[0] == a and (b, *key[1:]) in p50
        }

    def to_dict(self) -> dict:
        return {"machine": self.machine, "rows": [r.to_dict() for r in self.rows],
                "intervals": [{"model": k[0], "versus": k[1], "runtime": k[2], "device": k[3], "batch": k[4],
                               "ratio_low": v[0], "ratio_p50": v[1], "ratio_high": v[2]}
                              for k, v in self.intervals.items()],
                "notes": list(self.notes)}

    def to_markdown(self) -> str:
        head = " · ".join(f"{k}: {v}" for k, v in self.machine.items() if k != "onnxruntime_providers")
        lines = [head, "", "| model | runtime | device | batch | threads | p50 ms | p90 ms | p99 ms | mean ms | items/s "
                 "| spread p90/p50 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            if r.skipped:
                lines.append(f"| {r.model} | {r.runtime} | {r.device} | {r.batch} | {r.threads} | skipped: {r.skipped} ||||||")
            else:
                lines.append(f"| {r.model} | {r.runtime} | {r.device} | {r.batch} | {r.threads} | {r.p50_ms:.3f} | "
                             f"{r.p90_ms:.3f} | {r.p99_ms:.3f} | {r.mean_ms:.3f} | {r.items_per_s:.1f} | {r.spread:.2f} |")
        lines += [""] + [f"**Note:** {n}" for n in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike) -> Path:
        """A bar chart of p50 latency per configuration, one bar per model."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in self.rows if not r.skipped]
        configs = list(dict.fromkeys((r.runtime, r.device, r.batch) for r in rows))
        models = list(dict.fromkeys(r.model for r in rows))
        p50 = {(r.model, r.runtime, r.device, r.batch): r.p50_ms for r in rows}
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(configs)), 4))
        width = 0.8 / max(len(models), 1)
        for i, m in enumerate(models):
            ys = [p50.get((m, *c), np.nan) for c in configs]
            ax.bar(np.arange(len(configs)) + i * width, ys, width, label=m)
        ax.set_xticks(np.arange(len(configs)) + width * (len(models) - 1) / 2)
        ax.set_xticklabels([f"{rt}\n{dev} b{b}" for rt, dev, b in configs], fontsize=8)
        ax.set_ylabel("p50 latency (ms)")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title("Latency before and after")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _row(model, runtime, device, batch, threads, times) -> BenchRow:
    t = np.asarray(times)
    mean = float(t.mean())
    p50, p90 = float(np.percentile(t, 50)), float(np.percentile(t, 90))
    return BenchRow(model, runtime, device, batch, threads, p50, p90, float(np.percentile(t, 99)), mean,
                    batch / (mean / 1e3), len(times), spread=p90 / p50 if p50 > 0 else float("nan"))


def _torch_call(model, inputs, runtime, device):
    """A no-argument call running the model once (on a private copy), or the reason it cannot run."""
    if runtime == "torch-fp16" and device != "cuda":
        return "fp16 is timed on CUDA only"
    
    dtype = torch.float16 if runtime == "torch-fp16" else None
    m = clone(model).to(device).eval()
    if dtype is not None:
        m = m.to(dtype)
    args, kwargs = _inputs.call_args(_inputs.to(inputs, device, dtype))

    def call():
        with torch.inference_mode():
            m(*args, **kwargs)

    return call


def _ort_call(onnx_path, inputs, names, device, threads):
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "no CUDAExecutionProvider (install the onnxruntime-gpu extra)"
        providers = ["CUDAExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Sessions are timed in turn; a session's idle threads must not spin and steal the cores
    # from the one running (spinning would make every model but the first look slow).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=providers)
    args, kwargs = _inputs.call_args(inputs)
    tensors = dict(zip(names, [*args, *kwargs.values()]))
    feeds = {i.name: tensors[i.name].cpu().numpy() for i in session.get_inputs()}
    return lambda: session.run(None, feeds)  # returns host arrays: synchronous on every provider


def benchmark(
    models: Mapping[str, nn.Module | str | os.PathLike],
    example_inputs,
    *,
    runtimes: Sequence[str] = ("torch", "onnxruntime"),
    devices: Sequence[str] = ("cpu", "cuda"),
    batch_sizes: Sequence[int] = (1, 32),
    threads: int | None = None,
    warmup: int | None = None,
    iters: int | None = None,
    progress: bool = True,
) -> BenchReport:
    """Time each model in each runtime, device and batch size.

    Args:
        models: name -> ``nn.Module`` or path to an ``.onnx`` file (``{"dense": m, "shrunk": r.model}``).
        example_inputs: inputs of any batch size; they are resized to each of ``batch_sizes``.
        runtimes: "torch" (eager, inference_mode), "torch-fp16" (CUDA), "onnxruntime".
        devices: "cpu" and/or "cuda"; a device that is not there gives skipped rows.
        batch_sizes: batch sizes to time.
        threads: CPU threads for PyTorch and ONNX Runtime; None keeps PyTorch's current count.
        warmup, iters: untimed and timed iterations per row. None (default) picks them from the
            model's speed: warm-up for ~0.5 s (1 to 10 calls), then ~6 s of timing (5 to 100 calls),
            and up to 4x more rounds when two models cannot yet be ranked. Explicit counts are
            kept exactly; a note then says when they were too few to rank the models.
        progress: show progress (a bar on a terminal, plain lines otherwise).

    Returns:
        A `BenchReport`; ``report.speedup("dense", "shrunk")`` gives p50 ratios.

    Example:
        >>> import torch, shrink
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8))
        >>> rep = shrink.benchmark({"net": net}, torch.randn(1, 8), runtimes=("torch",), devices=("cpu",),
        ...                        batch_sizes=(1,), warmup=1, iters=5, progress=False)
        >>> rep.rows[0].p50_ms > 0
        True
    """
    _check_models(models)
    for name, value in (("runtimes", runtimes), ("devices", devices), ("batch_sizes", batch_sizes)):
        if isinstance(value, (str, int)) or not isinstance(value, Sequence) or not value:
            raise ShrinkTypeError(f"{name} must be a non-empty tuple, e.g. {name}=({RUNTIMES[0] if name == 'runtimes' else DEVICES[0] if name == 'devices' else 1!r},); got {value!r}")
    if any(isinstance(b, bool) or not isinstance(b, int) for b in batch_sizes):
        raise ShrinkTypeError(f"batch_sizes must be ints; got {tuple(batch_sizes)!r}")
    for name, value in (("warmup", warmup), ("iters", iters)):
        if value is not None:  # None: chosen from a short calibration (see above)
            checks.number(value, name=name, low=0, integer=True)
    if threads is not None:
        checks.number(threads, name="threads", low=1, integer=True, example=" threads=None keeps PyTorch's count.")
    bad = sorted(set(runtimes) - set(RUNTIMES)) + sorted(set(devices) - set(DEVICES))
    if bad:
        raise ShrinkValueError(f"unknown runtime/device {bad}; runtimes are {RUNTIMES}, devices {DEVICES}")
    if not models:
        raise ShrinkValueError("models is empty; pass {'name': model_or_onnx_path, ...}")
    if any(b < 1 for b in batch_sizes) or (warmup is not None and warmup < 0) or (iters is not None and iters < 1):
        raise ShrinkValueError("batch sizes and iters must be >= 1 and warmup >= 0")
    for name, m in models.items():
        if not isinstance(m, (nn.Module, str, os.PathLike)):
            raise ShrinkTypeError(f"models[{name!r}] must be an nn.Module or an .onnx path; got {type(m).__name__}")
    previous = torch.get_num_threads()
    threads = threads or previous
    torch.set_num_threads(threads)
    rows: dict[tuple, BenchRow] = {}
    intervals: dict[tuple, tuple[float, float, float]] = {}
    notes: list[str] = []
    configs = [(rt, dev, b) for rt in runtimes for dev in devices for b in batch_sizes]
    try:
        with tempfile.TemporaryDirectory() as tmp, progress_bar(progress, len(configs), "benchmark") as advance:
            onnx_paths: dict[str, Path] = {}
            for rt, dev, b in configs:
                calls = {}
                for name, model in models.items():
                    call = _prepare(name, model, rt, dev, b, example_inputs, threads, tmp, onnx_paths)
                    if isinstance(call, str):
                        rows[(name, rt, dev, b)] = BenchRow(name, rt, dev, b, threads, skipped=call)
                    else:
                        calls[name] = call
                times = interleaved(calls, dev, warmup, iters)
                times = settle(calls, dev, iters, times, intervals, notes, (rt, dev, b))
                for name, t in times.items():
                    rows[(name, rt, dev, b)] = row = _row(name, rt, dev, b, threads, t)
                    if row.spread > NOISY_SPREAD:
                        notes.append(f"{name} {rt} {dev} b{b}: p90 is {row.spread:.2f}x p50; the machine was busy, "
                                     "so these figures are noisy")
                advance(f"{rt} {dev} b{b}")
    finally:
        torch.set_num_threads(previous)
    ordered = [rows[(n, rt, dev, b)] for n in models for rt in runtimes for dev in devices for b in batch_sizes]
    # Recorded beside the figures: sub-millisecond models run up to ~2x slower without spinning,
    # but only without it do identical models time alike when sessions alternate.
    settings = {"threads": threads, "timing": "models alternated call by call",
                "onnxruntime_spinning": False}
    for note in notes:
        log.warning("benchmark: %s", note)
    return BenchReport(tuple(ordered), machine_info() | settings, intervals, tuple(notes))


def _check_models(models) -> None:
    """A dict of name -> module or existing .onnx file, checked before anything is timed or exported."""
    if isinstance(models, nn.Module):
        raise ShrinkTypeError("models must be a dict of name -> model, e.g. {'dense': model, 'shrunk': result.model}; "
                              "got one nn.Module")
    if not isinstance(models, Mapping):
        raise ShrinkTypeError(f"models must be a dict of name -> model or .onnx path; got {type(models).__name__}")
    for name, m in models.items():
        if not isinstance(name, str):
            raise ShrinkTypeError(f"model names must be strings; got {name!r}")
        if isinstance(m, nn.Module):
            continue
        if not isinstance(m, (str, os.PathLike)):
            hint = " Pass `result.model`." if isinstance(getattr(m, "model", None), nn.Module) else ""
            raise ShrinkTypeError(f"models[{name!r}] must be an nn.Module or an .onnx path; got {type(m).__name__}.{hint}")
        path = Path(m)
        if path.suffix != ".onnx" or not path.is_file():
            raise ShrinkValueError(f"models[{name!r}] = {str(path)!r} is not an existing .onnx file; pass an "
                                   "nn.Module or the path of an ONNX file (shrink.export_onnx writes one)")


def _prepare(name, model, runtime, device, batch, example_inputs, threads, tmp, onnx_paths):
    """A call that runs ``model`` once at ``batch``, or the reason the row is skipped."""
    if device == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    inputs = _inputs.with_batch(example_inputs, batch)
    if runtime.startswith("torch"):
        if not isinstance(model, nn.Module):
            return "an ONNX file has no PyTorch runtime"
        return _torch_call(model, inputs, runtime, device)
    if isinstance(model, nn.Module):
        names = input_names(model, example_inputs)
        if name not in onnx_paths:
            onnx_paths[name] = Path(export_onnx(model, example_inputs, Path(tmp) / f"{len(onnx_paths)}.onnx").path)
        path = onnx_paths[name]
    else:
        path = Path(model)
        if not path.is_file():
            raise ShrinkValueError(f"ONNX file {str(path)!r} not found")
        import onnx

        names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    return _ort_call(path, inputs, names, device, threads)
