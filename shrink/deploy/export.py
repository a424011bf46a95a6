"""`export_onnx`: write an ONNX file and prove ONNX Runtime computes what PyTorch computes.

The file is exported into a temporary folder beside its destination, checked in ONNX Runtime
on the example inputs and on a second batch size, and only then moved into place. A file that
fails the check is deleted, never left behind as if it were good.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .._util import inputs as _inputs
from ..errors import ParityError, ShrinkError, ShrinkValueError

log = logging.getLogger(__name__)
TWO_GB = 2 * 1024**3


@dataclass(frozen=True)
class OutputParity:
    """How one output of the ONNX model compares with PyTorch's.

    Attributes:
        name: the output's name in the ONNX file.
        shape: its shape on the example inputs.
        max_abs_diff: largest |onnx - torch| over every batch size checked.
        max_rel_diff: max_abs_diff divided by the largest |torch| value of that output.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float


@dataclass(frozen=True)
class ExportReport:
    """An ONNX file that passed the parity check.

    Attributes:
        path: where the file is.
        exporter: "dynamo" (torch.export based) or "torchscript".
        opset: the default-domain opset of the file.
        file_bytes: size of the .onnx file plus any external data file.
        input_names, outputs: names, and per-output parity.
        batch_sizes: the batch sizes parity was checked at.
        atol: the tolerance used (relative to the output's scale where that exceeds 1).
        dynamic_batch: whether the batch axis is dynamic.
    """

    path: str
    exporter: str
    opset: int
    file_bytes: int
    input_names: tuple[str, ...]
    outputs: tuple[OutputParity, ...]
    batch_sizes: tuple[int, ...]
    atol: float
    dynamic_batch: bool

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=0.0)

    @property
    def max_rel_diff(self) -> float:
        return max((o.max_rel_diff for o in self.outputs), default=0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(max_abs_diff=self.max_abs_diff, max_rel_diff=self.max_rel_diff)
        return d


def input_names(model: nn.Module, example_inputs) -> list[str]:
    """Readable input names: dict keys, else the forward's parameter names."""
    args, kwargs = _inputs.call_args(example_inputs)
    if kwargs:
        return list(kwargs)
    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = [params[i] if i < len(params) else f"input_{i}" for i in range(len(args))]
    # A nested tuple (an LSTM's (h, c)) is one ONNX input per tensor: hidden_0, hidden_1.
    return [f"{n}_{j}" if isinstance(a, (tuple, list)) else n
            for n, a in zip(names, args) for j in range(len(_inputs.leaves((a,), {})))]


def _export(model, args, kwargs, path: Path, names, out_names, dynamic_batch, dynamo, opset):
    dynamic_axes = {n: {0: "batch"} for n in [*names, *out_names]} if dynamic_batch else None
    options = dict(input_names=names, output_names=out_names, opset_version=opset, dynamo=dynamo)
    if dynamo:
        dynamic_shapes = None
        if dynamic_batch:
            batch = torch.export.Dim("batch", min=1)
            shapes = [{0: batch} if isinstance(a, torch.Tensor) and a.dim() else None for a in [*args, *kwargs.values()]]
            dynamic_shapes = dict(zip(names, shapes)) if kwargs else tuple(shapes)
        # Weights go to a separate .data file only where protobuf's 2 GB limit forces it.
        big = sum(p.numel() * p.element_size() for p in model.parameters()) >= TWO_GB
        options.update(dynamic_shapes=dynamic_shapes, external_data=big, optimize=True)
    else:
        options.update(dynamic_axes=dynamic_axes)
    with warnings.catch_warnings(), _inputs.evaluating(model), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), kwargs=kwargs or None, **options)


def check_parity(path: Path, model: nn.Module, inputs_list, names, out_names, atol: float) -> tuple[OutputParity, ...]:
    """Run the file in ONNX Runtime (CPU) and PyTorch on each set of inputs; compare every output."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session_inputs = [i.name for i in session.get_inputs()]
    worst: dict[str, list[float]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for k, inputs in enumerate(inputs_list):
        args, kwargs = _inputs.call_args(inputs)
        tensors = dict(zip(names, _inputs.leaves(args, kwargs)))
        feeds = {n: tensors[n].detach().cpu().numpy() for n in session_inputs}
        with torch.no_grad():
            expected = list(_inputs.flatten_outputs(_inputs.run(model, inputs)).values())
        got = session.run(None, feeds)
        if len(got) != len(expected):
            raise ParityError(f"ONNX Runtime returned {len(got)} outputs where PyTorch returns {len(expected)}")
        for name, e, g in zip(out_names, expected, got):
            e = e.detach().float().cpu().numpy()
            g = np.asarray(g, dtype=np.float32)
            if e.shape != g.shape:
                raise ParityError(f"output {name!r}: ONNX Runtime shape {g.shape} != PyTorch shape {e.shape}")
            abs_diff = float(np.max(np.abs(e - g))) if e.size else 0.0
            scale = float(np.max(np.abs(e))) if e.size else 0.0
            if k == 0:
                shapes[name] = tuple(e.shape)
            prev = worst.get(name, [0.0, 0.0])
            worst[name] = [max(prev[0], abs_diff), max(prev[1], abs_diff / max(scale, 1e-12))]
            if not np.isfinite(abs_diff) or abs_diff > atol * max(1.0, scale):
                worst[name].append(-1.0)  # marks a failure
    parity = tuple(OutputParity(n, shapes[n], w[0], w[1]) for n, w in worst.items())
    failed = sorted(n for n, w in worst.items() if len(w) > 2)
    if failed:
        detail = "; ".join(f"{o.name!r}: max abs diff {o.max_abs_diff:.3g}, max rel diff {o.max_rel_diff:.3g}"
                           for o in parity if o.name in failed)
        raise ParityError(f"ONNX Runtime disagrees with PyTorch beyond atol={atol:g} on {failed}: {detail}")
    return parity


def export_onnx(
    model: nn.Module,
    example_inputs,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    atol: float = 1e-4,
    opset: int | None = None,
    exporter: str = "auto",
    overwrite: bool = False,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` and check ONNX Runtime agrees with PyTorch.

    Args:
        model: the model to export (run in eval mode).
        example_inputs: a tensor, tuple of tensors, or dict of keyword tensors.
        path: the .onnx file to write.
        dynamic_batch: make dimension 0 of every input and output dynamic.
        atol: largest allowed |onnx - torch|, scaled by the output's magnitude where that exceeds 1.
        opset: ONNX opset; None lets the exporter choose.
        exporter: "auto" (torch.export-based, falling back to TorchScript if that fails or
            disagrees), "dynamo" or "torchscript".
        overwrite: replace an existing file.

    Returns:
        An `ExportReport` with per-output differences, file size, exporter and opset.

    Raises:
        ParityError: ONNX Runtime's outputs differ beyond ``atol``; no file is left at ``path``.
        ShrinkValueError: ``path`` exists (without ``overwrite``) or the export fails.

    Example:
        >>> import torch, shrink, tempfile, os
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
        >>> rep = shrink.export_onnx(net, torch.randn(2, 4), os.path.join(tempfile.mkdtemp(), "m.onnx"))
        >>> rep.max_abs_diff < 1e-4
        True
    """
    import onnx

    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ShrinkValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript'; got {exporter!r}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ShrinkValueError(f"the ONNX path must end in .onnx; got {str(path)!r}")
    if path.exists() and not overwrite:
        raise ShrinkValueError(f"{str(path)!r} already exists; choose another path or pass overwrite=True")
    if dynamic_batch and _inputs.is_nested(example_inputs):
        raise ShrinkValueError(
            "dynamic_batch=True needs every input batched along dimension 0, but some input is a tuple "
            "(a recurrent state such as (h, c), batched along dimension 1): pass dynamic_batch=False"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    args, kwargs = _inputs.call_args(example_inputs)
    names = input_names(model, example_inputs)
    with torch.no_grad():
        out_names = list(_inputs.flatten_outputs(_inputs.run(model, example_inputs)))
    batch = _inputs.batch_of(example_inputs)
    checks = [example_inputs]
    if dynamic_batch:
        checks.append(_inputs.with_batch(example_inputs, batch + 2 if batch > 1 else 3, seed=1))
    order = {"auto": [True, False], "dynamo": [True], "torchscript": [False]}[exporter]
    errors = []
    for dynamo in order:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
        target = tmp / path.name
        try:
            _export(model, args, kwargs, target, names, out_names, dynamic_batch, dynamo, opset)
            parity = check_parity(target, model, checks, names, out_names, atol)
            proto = onnx.load(str(target), load_external_data=False)
            opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
            size = sum(f.stat().st_size for f in tmp.iterdir())
            for f in tmp.iterdir():  # the .onnx and its external data file, if any
                os.replace(f, path.parent / f.name)
            kind = "dynamo" if dynamo else "torchscript"
            log.info("exported %s with the %s exporter, max abs diff %.3g", path, kind, max(p.max_abs_diff for p in parity))
            return ExportReport(str(path), kind, opset_used, size, tuple(names), parity,
                                tuple(sorted({_inputs.batch_of(c) for c in checks})), atol, dynamic_batch)
        except ParityError as exc:
            errors.append(exc)
        except ShrinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - exporters raise many kinds
            errors.append(exc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    parity_errors = [e for e in errors if isinstance(e, ParityError)]
    if parity_errors:
        raise parity_errors[0]
    last = errors[-1]
    raise ShrinkValueError(f"ONNX export failed: {type(last).__name__}: {str(last)[:500]}") from last
