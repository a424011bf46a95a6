"""`export_onnx`: write an ONNX file and prove ONNX Runtime computes what PyTorch computes.

The file is exported into a temporary folder beside its destination, checked in ONNX Runtime
on the example inputs and on a second batch size, and only then moved into place. A file that
fails the check is deleted, never left behind as if it were good.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .._util import atomic, checks
from .._util import inputs as _inputs
from .export_errors import unsupported_op
from ..errors import ParityError, ShrinkError, ShrinkValueError
from ..layers import hf_moe
from . import batch_axis

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
        notes: what the export did that the user should know (no-cache forward, batch of 2 used).
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
    notes: tuple[str, ...] = ()

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


def _export(model, args, kwargs, path: Path, names, out_names, dynamic_batch, dynamo, opset, batch_dim=0):
    dynamic_axes = {n: {batch_dim: "batch"} for n in [*names, *out_names]} if dynamic_batch else None
    options = dict(input_names=names, output_names=out_names, opset_version=opset, dynamo=dynamo)
    if dynamo:
        dynamic_shapes = None
        if dynamic_batch:
            batch = torch.export.Dim("batch", min=1)
            shapes = [{batch_dim: batch} if isinstance(a, torch.Tensor) and a.dim() > batch_dim else None
                      for a in [*args, *kwargs.values()]]
            dynamic_shapes = dict(zip(names, shapes)) if kwargs else tuple(shapes)
        # Weights go to a separate .data file only where protobuf's 2 GB limit forces it.
        big = sum(p.numel() * p.element_size() for p in model.parameters()) >= TWO_GB
        options.update(dynamic_shapes=dynamic_shapes, external_data=big, optimize=True)
    else:
        options.update(dynamic_axes=dynamic_axes)
    with warnings.catch_warnings(), _inputs.evaluating(model), torch.no_grad(), _quiet(f"{'dynamo' if dynamo else 'torchscript'} exporter"):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), kwargs=kwargs or None, **options)


@contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Keep the exporters' progress lines and graph dumps off the terminal; log them at debug level.

    Both Python-level writes and C++ writes to file descriptors 1 and 2 are captured.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = []
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
        except OSError:  # no real descriptors (an embedded interpreter): Python-level capture only
            pass
        text = io.StringIO()
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            chatter = text.getvalue() + sink.read().decode(errors="replace")
            if chatter.strip():
                log.debug("%s output:\n%s", what, chatter.rstrip())


def _float32_for_cpu(model: nn.Module, example_inputs):
    """A bfloat16/float16 model as a float32 copy, with float inputs to match (and the note saying so).

    ONNX Runtime's CPU provider has no bfloat16 kernels for most operators (``Mul``, ``MatMul``:
    "Could not find an implementation for Mul(14)"), and few float16 ones, so a checkpoint shipped
    in bf16 exported as such does not load there. The float32 graph computes the same function
    with the model's own weights, upcast exactly; the caller's model is not changed (the copy costs
    the model's size in float32 while exporting)."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    low = sorted(str(d).replace("torch.", "") for d in dtypes & {torch.bfloat16, torch.float16})
    if not low or torch.cuda.is_available() and any(p.is_cuda for p in model.parameters()):
        return model, example_inputs, []
    from .._util.clone import clone

    upcast = clone(model).float()

    def cast(value):
        if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16):
            return value.float()
        return value

    if isinstance(example_inputs, dict):
        example_inputs = {k: cast(v) for k, v in example_inputs.items()}
    elif isinstance(example_inputs, tuple):
        example_inputs = tuple(cast(v) for v in example_inputs)
    else:
        example_inputs = cast(example_inputs)
    note = (f"exported as a float32 graph from the model's {' and '.join(low)} weights, upcast exactly: ONNX Runtime's "
            "CPU provider has no kernels for most operators in those types; the parity check is against "
            "the upcast model")
    return upcast, example_inputs, [note]


@contextmanager
def _no_cache(model: nn.Module) -> Iterator[list[str]]:
    """Export the forward without a KV cache: a cache object is no tensor an exporter can take.

    Composite models (encoder-decoders, audio-text models) keep ``use_cache`` in their
    sub-configs (``decoder``, ``text_config``): those are switched off too, and a forward that
    takes ``use_cache`` is called with False.
    """
    config = getattr(model, "config", None)
    notes: list[str] = []
    cached = [c for c in _configs(config) if getattr(c, "use_cache", False) is True]
    hook = None
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        params = []
    if config is not None and "use_cache" in params:  # some (T5) build a cache unless told so in the call
        at = params.index("use_cache")

        def no_cache(_m, args, kwargs):
            if len(args) > at:  # the TorchScript exporter passes keywords by position
                return (*args[:at], False, *args[at + 1:]), kwargs
            return args, {**kwargs, "use_cache": False}

        hook = model.register_forward_pre_hook(no_cache, with_kwargs=True)
    if cached:
        notes.append("exported the forward without KV cache (use_cache=False); past_key_values are not outputs")
    for c in cached:
        c.use_cache = False
    try:
        yield notes
    finally:
        if hook is not None:
            hook.remove()
        for c in cached:
            c.use_cache = True


def _configs(config) -> list:
    """A Hugging Face config and the sub-configs it nests (one level: ``decoder``, ``text_config``)."""
    if config is None or not hasattr(config, "to_dict"):
        return []
    return [config, *(v for k, v in vars(config).items() if not k.startswith("_") and hasattr(v, "to_dict"))]


def _with_batch_at(example_inputs, batch: int, dim: int, seed: int):
    """``with_batch`` along dimension ``dim`` (sequence-first models keep their batch on 1)."""
    if dim == 0:
        return _inputs.with_batch(example_inputs, batch, seed=seed)
    args, kwargs = _inputs.call_args(example_inputs)
    moved = _inputs.with_batch({str(i): t.movedim(dim, 0) if isinstance(t, torch.Tensor) and t.dim() > dim else t
                               for i, t in enumerate([*args, *kwargs.values()])}, batch, seed=seed)
    back = [t.movedim(0, dim) if isinstance(t, torch.Tensor) and t.dim() > dim else t for t in moved.values()]
    if kwargs:
        return dict(zip(kwargs, back))
    return back[0] if isinstance(example_inputs, torch.Tensor) else tuple(back)


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
        try:
            got = session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds
            batch = _inputs.batch_of(inputs)
            raise ParityError(
                f"ONNX Runtime cannot run the exported file on inputs {_inputs.describe(inputs)}: "
                f"{type(exc).__name__}: {str(exc)[:300]}. If only another batch size fails, the model's code pins "
                f"its batch axis (e.g. a reshape with a literal batch): export with dynamic_batch=False, or, for a "
                f"model whose batch is not dimension 0 (sequence-first), pass batch_dim=. (batch {batch})"
            ) from exc
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
    batch_dim: int | None = None,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` and check ONNX Runtime agrees with PyTorch.

    Args:
        model: the model to export (run in eval mode).
        example_inputs: a tensor, tuple of tensors, or dict of keyword tensors.
        path: the .onnx file to write.
        dynamic_batch: make the batch axis (dimension ``batch_dim``) of every input and output
            dynamic. A batch-1 example is exported from a batch of 2 (torch.export would fix a
            size-1 axis) and checked at batch 1 and 3.
        atol: largest allowed |onnx - torch|, scaled by the output's magnitude where that exceeds 1.
        opset: ONNX opset; None lets the exporter choose.
        exporter: "auto" (torch.export-based, falling back to TorchScript if that fails or
            disagrees), "dynamo" or "torchscript".
        overwrite: replace an existing file.
        batch_dim: the batch axis of inputs and outputs: 0, or 1 for sequence-first models
            (``nn.LSTM`` without ``batch_first``, ``nn.MultiheadAttention``). None (the default)
            finds it by running the model on two inputs joined along dimension 0, then 1: the
            batch is the one along which they come out unmixed (batch_axis.py); the report's
            ``notes`` say when that is not dimension 0, or when neither could be confirmed.

    A model with a KV cache (Hugging Face ``use_cache=True``) is exported without it; the
    report's ``notes`` say so. The exporters' own output is logged at debug level.

    Returns:
        An `ExportReport` with per-output differences, file size, exporter and opset.

    Raises:
        ParityError: ONNX Runtime's outputs differ beyond ``atol``; no file is left at ``path``.
        ShrinkValueError: ``path`` exists (without ``overwrite``) or every exporter fails (each
            one's failure is listed).

    Example:
        >>> import torch, shrink, tempfile, os
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
        >>> rep = shrink.export_onnx(net, torch.randn(2, 4), os.path.join(tempfile.mkdtemp(), "m.onnx"))
        >>> rep.max_abs_diff < 1e-4
        True
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ShrinkValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript'; got {exporter!r}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ShrinkValueError(f"the ONNX path must end in .onnx; got {str(path)!r}")
    checks.module(model)
    model = checks.uncompiled(model)
    checks.number(atol, name="atol", low=0, example=" atol=1e-4 is the default.")
    if opset is not None:
        checks.number(opset, name="opset", low=7, integer=True, example=" Leave opset=None to let the exporter choose.")
    if batch_dim is not None and (isinstance(batch_dim, bool) or not isinstance(batch_dim, int) or batch_dim < 0):
        raise ShrinkValueError(f"batch_dim must be a dimension index such as 0 or 1; got {batch_dim!r}")
    if dynamic_batch and _inputs.is_nested(example_inputs):
        raise ShrinkValueError(
            "dynamic_batch=True needs every input batched along dimension 0, but some input is a tuple "
            "(a recurrent state such as (h, c), batched along dimension 1): pass dynamic_batch=False"
        )
    checks.finite_inputs(example_inputs)
    atomic.check_destination(path, overwrite=overwrite, kind="file")
    atomic.make_parents(path)
    model, example_inputs, dtype_notes = _float32_for_cpu(model, example_inputs)
    # The caller's train/eval mode (of every submodule) comes back as it was, whatever happens.
    with _inputs.evaluating(model), _no_cache(model) as notes, hf_moe.exportable(model) as moe_notes:
        notes += dtype_notes + moe_notes
        if batch_dim is None:
            batch_dim = batch_axis.choose(model, example_inputs, dynamic_batch, notes)
        return _export_checked(model, example_inputs, path, dynamic_batch, atol, opset, exporter, batch_dim, notes)


def _export_checked(model, example_inputs, path: Path, dynamic_batch, atol, opset, exporter, batch_dim, notes):
    import onnx

    names = input_names(model, example_inputs)
    with torch.no_grad():
        out_names = _output_names(list(_inputs.flatten_outputs(_inputs.run(model, example_inputs))), names, notes)
    batch = _batch_at(example_inputs, batch_dim)
    checks = [example_inputs]
    traced_on = example_inputs
    if dynamic_batch:
        checks.append(_with_batch_at(example_inputs, batch + 2 if batch > 1 else 3, batch_dim, seed=1))
        if batch == 1:  # torch.export specialises size-1 dimensions: a batch-1 example would fix the batch
            traced_on = _with_batch_at(example_inputs, 2, batch_dim, seed=2)
            notes.append("exported from a batch of 2 made like the batch-1 example, so the batch axis stays dynamic")
    args, kwargs = _inputs.call_args(traced_on)
    order = {"auto": [True, False], "dynamo": [True], "torchscript": [False]}[exporter]
    errors: list[tuple[str, Exception]] = []
    for dynamo in order:
        kind = "dynamo" if dynamo else "torchscript"
        tmp = atomic.temp_dir(path.parent, path.name)
        target = tmp / path.name
        try:
            _export(model, args, kwargs, target, names, out_names, dynamic_batch, dynamo, opset, batch_dim)
            parity = check_parity(target, model, checks, names, out_names, atol)
            proto = onnx.load(str(target), load_external_data=False)
            opset_used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
            size = sum(f.stat().st_size for f in tmp.iterdir())
            for f in tmp.iterdir():  # the .onnx and its external data file, if any
                os.replace(f, path.parent / f.name)
            log.info("exported %s with the %s exporter, max abs diff %.3g", path, kind, max(p.max_abs_diff for p in parity))
            for note in notes:
                log.info("%s: %s", path.name, note)
            return ExportReport(str(path), kind, opset_used, size, tuple(names), parity,
                                tuple(sorted({_batch_at(c, batch_dim) for c in checks})), atol, dynamic_batch,
                                tuple(notes))
        except ShrinkError as exc:
            if not isinstance(exc, ParityError):
                raise
            errors.append((kind, exc))
        except Exception as exc:  # noqa: BLE001 - exporters raise many kinds
            errors.append((kind, exc))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    listed = "; ".join(f"{kind} exporter: {type(e).__name__}: {_first_lines(e)}" for kind, e in errors)
    if len(errors) == 1 and isinstance(errors[0][1], ParityError):
        raise errors[0][1]
    cls = ParityError if all(isinstance(e, ParityError) for _, e in errors) else ShrinkValueError
    op = next((unsupported_op(e) for _, e in errors if unsupported_op(e)), None)
    hint = (f" The operator {op!r} has no ONNX translation here: try another opset (opset=18) or rewrite the layer "
            "that uses it with supported operations." if op else "")
    raise cls(f"ONNX export failed with every exporter tried ({listed}).{hint} Try exporter='dynamo' or "
              "'torchscript' alone, dynamic_batch=False, or keep the failing layer out of the exported model."
              ) from errors[-1][1]


def _output_names(out_names: list[str], names: list[str], notes: list[str]) -> list[str]:
    """Output names no input has: ONNX defines each name once, and ONNX Runtime refuses a file that
    names an output like an input ("This is an invalid model. Error: Duplicate definition of name
    (sample)": diffusers' U-Nets and VAEs take ``sample`` and return ``.sample``)."""
    taken, found = set(names), []
    for name in out_names:
        new, k = name, 1
        while new in taken:
            new, k = f"{name}_out" + (str(k) if k > 1 else ""), k + 1
        if new != name:
            notes.append(f"output {name!r} is named {new!r} in the file: an input is named {name!r}")
        taken.add(new)
        found.append(new)
    return found


def _first_lines(exc: Exception, limit: int = 400) -> str:
    text = str(exc)
    if "## Exception summary" in text:  # torch.onnx's long errors: the cause is in this section
        text = text.split("## Exception summary", 1)[1].split("(Refer to the full stack trace", 1)[0]
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _batch_at(example_inputs, dim: int) -> int:
    args, kwargs = _inputs.call_args(example_inputs)
    return next((a.shape[dim] for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor) and a.dim() > dim), 1)
