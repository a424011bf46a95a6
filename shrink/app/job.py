"""The main job in one call: compress, recover accuracy, save, export, benchmark, report."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from torch import nn

from . import report
from .._util.clone import clone
from .._util.atomic import atomic_folder, check_destination
from ..deploy.bench import benchmark
from ..cut.calibrate import DATA_AWARE
from ..cut.compress import compress
from ..errors import ShrinkValueError
from ..deploy.export import export_onnx
from ..deploy import hf
from ..deploy.store import write_into
from ..cut.iterative import compress_iteratively
from ..recover.evaluate import evaluate
from ..recover.train import fit, recalibrate_bn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """A speed target or budget for `compress_to_folder` (the CLI builds one from its flags).

    Attributes:
        speedup, latency_ms: measured on ``runtime``/``device`` at ``batch_size``.
        macs, params: at most this fraction of the original, as `shrink.count` counts.
    """

    speedup: float | None = None
    latency_ms: float | None = None
    macs: float | None = None
    params: float | None = None
    runtime: str = "onnxruntime"
    device: str = "cpu"
    batch_size: int = 1

    def given(self) -> bool:
        return any(v is not None for v in (self.speedup, self.latency_ms, self.macs, self.params))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Quality:
    """What the main job measures on data and how it ranks with it (the CLI builds one from its flags).

    Attributes:
        metric: `shrink.evaluate`'s ``metric``: "accuracy", "perplexity" or a function
            ``(model, batch) -> (total, count)``; measured on the validation data dense, right after
            the cut (and after BatchNorm recalibration), and after recovery.
        importance: `shrink.compress`'s ``importance`` ("l1", "l2", "activation", "taylor"); None
            follows ``norm``.
        calibration_batches: how many of the first training batches the data-aware importances run.
        data: how the data was named (``--data``), for the report.
    """

    metric: str | Callable = "accuracy"
    importance: str | None = None
    calibration_batches: int = 8
    data: str | None = None

    def to_dict(self) -> dict:
        return {"metric": self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "custom"),
                "importance": self.importance, "calibration_batches": self.calibration_batches, "data": self.data}


def compress_to_folder(
    model: nn.Module,
    example_inputs,
    out: str | os.PathLike,
    *,
    ratio=None,
    target: Target | None = None,
    scope: str = "local",
    norm: int = 1,
    reinit: str = "trained",
    initial_state=None,
    ignore: Iterable = (),
    round_to: int | None = None,
    strict: bool = False,
    trace_timeout: float | None = 180.0,
    onnx: bool = True,
    bench: bool = False,
    bench_batch_sizes=(1, 32),
    bench_iters: int | None = None,
    train_loader=None,
    val_loader=None,
    finetune_epochs: int = 0,
    lr: float = 1e-3,
    distill: bool = True,
    steps: int = 1,
    overwrite: bool = False,
    model_spec: str | None = None,
    progress: bool = True,
    hf_source: str | os.PathLike | None = None,
    quality: Quality | None = None,
) -> dict:
    """Compress ``model`` and write everything a deployment needs into the folder ``out``.

    Writes ``model.safetensors``, ``plan.json``, ``model.onnx`` (parity-checked, with ``onnx``),
    ``report.md``, ``report.json`` and plots. Everything is written into a temporary folder
    first and renamed at the end, so a failure leaves ``out`` as it was.

    With ``hf_source`` (the Hugging Face folder the model came from) the folder is itself a
    Hugging Face model folder (`shrink.save_pretrained`), plus the ONNX file and the report.

    With ``steps > 1`` the cut is made in that many rounds (`compress_iteratively`), fine-tuning
    ``finetune_epochs`` after each round when data is given; the schedule goes in the report.

    With ``val_loader`` the report shows ``quality.metric`` dense, right after the cut, after
    BatchNorm recalibration (when the model has BatchNorm and ``train_loader`` is given) and after
    fine-tuning, beside size and latency; without it, it says there is no data. A data-aware
    ``quality.importance`` ranks on the first ``quality.calibration_batches`` training batches.

    With a ``target`` (speed-up, latency, MACs or parameter budget) `compress` chooses the widths
    and, for speed, measures them; the report shows the target, the prediction and the measurement.
    Without one, ``ratio`` (default 0.5) applies, and with ``bench`` a compressed model measured
    slower than the original is flagged as a warning in the report and the log.

    Returns:
        The report's numbers (as in ``report.json``).
    """
    out = check_destination(out, overwrite=overwrite, hint="pass --force")  # before any work, not after it
    if finetune_epochs and train_loader is None:
        raise ShrinkValueError(f"fine-tuning for {finetune_epochs} epochs needs training data: pass --data "
                               "package.module:loaders (returning (train_loader, val_loader)), or drop --epochs")
    quality = quality or Quality()
    calibration = _calibration(quality, train_loader)

    def measure(m) -> float:
        return evaluate(m, val_loader, metric=quality.metric)

    stages, history = {}, []
    if val_loader is not None:
        stages["dense"] = measure(model)
    teacher = clone(model).eval() if distill and train_loader is not None else None
    schedule = []
    target = target or Target()
    if target.given() and steps > 1:
        raise ShrinkValueError("a speed target or budget is reached in one cut; drop --steps or pass --ratio")
    if steps > 1:
        ratio = 0.5 if ratio is None else ratio
        if reinit != "trained" or scope != "local":
            raise ShrinkValueError("iterative pruning (steps > 1) supports reinit='trained' and scope='local'")

        def finetune(m, k):
            if train_loader is not None and finetune_epochs > 0:
                for record in fit(m, train_loader, epochs=finetune_epochs, lr=lr, teacher=teacher,
                                  val_loader=val_loader, progress=progress):
                    history.append({"step": k, **record})

        result, schedule = compress_iteratively(
            model, example_inputs, ratio=ratio, steps=steps, norm=norm, importance=quality.importance,
            calibration=calibration, ignore=ignore, round_to=round_to, finetune=finetune,
            evaluate=measure if val_loader is not None else None)
        if val_loader is not None:
            stages[f"after {steps} rounds of cut + fine-tuning"] = schedule[-1]["metric"]
    else:
        goal = {k: v for k, v in target.to_dict().items() if v is not None} if target.given() else {}
        result = compress(model, example_inputs, ratio=ratio, scope=scope, norm=norm, importance=quality.importance,
                          calibration=calibration, reinit=reinit, initial_state=initial_state, ignore=ignore,
                          round_to=round_to, strict=strict, trace_timeout=trace_timeout, **goal)
        if val_loader is not None:
            stages["after cut"] = measure(result.model)
        if train_loader is not None and recalibrate_bn(result.model, train_loader) and val_loader is not None:
            stages["after cut + BatchNorm recalibration"] = measure(result.model)
        if train_loader is not None and finetune_epochs > 0:
            history = fit(result.model, train_loader, epochs=finetune_epochs, lr=lr, teacher=teacher,
                          val_loader=val_loader, progress=progress)
            if val_loader is not None:
                stage = "after fine-tuning" + (" (distilled)" if teacher is not None else "")
                stages[stage] = measure(result.model)
    with atomic_folder(out, overwrite=overwrite, hint="pass --force") as tmp:
        if hf_source is not None:
            hf.write_into(result, tmp, source=hf_source)
        else:
            write_into(result, tmp, extra={"model_factory": model_spec} if model_spec else None)
        files = {f.name: f.stat().st_size for f in tmp.iterdir() if f.suffix in (".safetensors", ".json")}
        export = None
        if onnx:
            export = export_onnx(result.model, example_inputs, tmp / "model.onnx")
            files["model.onnx"] = export.file_bytes
        bench_report = None
        if bench:
            bench_report = benchmark({"before": model, "after": result.model}, example_inputs,
                                     batch_sizes=bench_batch_sizes, iters=bench_iters, progress=progress)
            (tmp / "latency.md").write_text(bench_report.to_markdown())
        settings = {**result.plan.settings, "model": model_spec, "finetune_epochs": finetune_epochs,
                    "distill": distill if finetune_epochs else None,
                    "target": target.to_dict() if target.given() else None, "quality": quality.to_dict()}
        measured = {**quality.to_dict(), "stages": stages,
                    "note": None if val_loader is not None else report.NO_DATA}
        doc = report.write(tmp, result, settings=settings, export=export, bench=bench_report,
                           quality=measured, history=history, files=files, schedule=schedule)
    for warning in doc.get("warnings", []):
        log.warning("%s", warning)
    doc["out"] = str(out)
    return doc


def _calibration(quality: Quality, train_loader) -> list | None:
    """The first training batches, for a data-aware importance; a clear error when there is no data."""
    if quality.importance not in DATA_AWARE:
        return None
    if train_loader is None:
        raise ShrinkValueError(f"--importance {quality.importance} ranks units on data: pass --data (package."
                               "module:loaders returning (train_loader, val_loader), or a text file), or use "
                               "--importance l1")
    return list(itertools.islice(train_loader, quality.calibration_batches))
