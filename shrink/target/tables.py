"""Latency of each layer vs its width, measured on the runtime, device and batch size you deploy to.

Every convolution and linear layer of the model is rebuilt alone at a grid of widths (the same
kernel, stride and input size) and timed on the real runtime: ONNX Runtime (a one-node graph built
with ``onnx.helper``) or PyTorch eager. Figures are cached in one JSON file per machine, runtime,
device and batch size under ``$SHRINK_CACHE_DIR`` (default ``~/.cache/shrink``), so the second call
measures nothing. A layer's time with both widths narrowed is modelled as a product,
``T(c_in, c_out) ~ T(C_in, c_out) * T(c_in, C_out) / T(C_in, C_out)``, which keeps the measurements
to one row and one column per layer; the verify loop corrects what the model misses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._util.progress import progress_bar
from ..errors import ShrinkValueError
from .space import Layer, Space

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "torch", "torch-fp16")
DEVICES = ("cpu", "cuda")


def cache_dir() -> Path:
    """``$SHRINK_CACHE_DIR``, else ``$XDG_CACHE_HOME/shrink``, else ``~/.cache/shrink``."""
    env = os.environ.get("SHRINK_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shrink"


def _machine_key(device: str, threads: int) -> str:
    from ..deploy.bench import machine_info

    info = machine_info()
    facts = [info.get("cpu"), info.get("cores"), info.get("torch"), info.get("onnxruntime"), threads]
    if device == "cuda":
        facts += [info.get("gpu"), info.get("cuda")]
    return hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()[:12]


def grid(units: int) -> list[int]:
    """Unit counts measured for a knob of ``units``: all of them when few, else 10 fractions plus
    the multiples of 8 and 16 just below each (blocked kernels favour them; the table decides)."""
    if units <= 24:
        return list(range(1, units + 1))
    points = {units}
    for j in range(1, 11):
        p = max(1, math.ceil(units * j / 10))
        points.update({p, max(1, p - p % 8), max(1, p - p % 16)})
    return sorted(points)


class LatencyTable:
    """Measured milliseconds per layer configuration, for one runtime/device/batch, cached on disk.

    Example:
        >>> table = LatencyTable("onnxruntime", "cpu", 1)   # doctest: +SKIP
        >>> table.time(layer, c_in=64, c_out=48, groups=1)  # doctest: +SKIP
    """

    def __init__(self, runtime: str, device: str, batch_size: int, *, threads: int | None = None):
        if runtime not in RUNTIMES:
            raise ShrinkValueError(f"runtime must be one of {RUNTIMES}; got {runtime!r}")
        if device not in DEVICES:
            raise ShrinkValueError(f"device must be one of {DEVICES}; got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ShrinkValueError("device='cuda' but CUDA is not available here; use device='cpu' or a CUDA machine")
        if runtime == "torch-fp16" and device != "cuda":
            raise ShrinkValueError("runtime='torch-fp16' is timed on CUDA only; use device='cuda'")
        self.runtime, self.device, self.batch_size = runtime, device, int(batch_size)
        self.threads = threads or torch.get_num_threads()
        key = _machine_key(device, self.threads)
        self.path = cache_dir() / f"latency-{key}-{runtime}-{device}-b{self.batch_size}-t{self.threads}.json"
        self.entries: dict[str, float] = {}
        self.measured = 0  # entries measured by this instance (0 on a fully cached call)
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())["entries"]
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable latency cache %s", self.path)

    def time(self, layer: Layer, c_in: int, c_out: int, groups: int) -> float:
        """Milliseconds of ``layer`` at these widths (measured once, then from the cache), less the
        runtime's cost of one call: a layer inside a model does not pay that call each time."""
        shape = _shape(layer, c_in, self.batch_size)
        key = f"{layer.op}|{shape}|{c_in}|{c_out}|{groups}|{sorted(layer.attrs.items())}"
        raw = self._raw(key, layer.op, shape, c_in, c_out, groups, layer.attrs)
        return max(raw - self.call_overhead(), 0.02 * raw)

    def call_overhead(self) -> float:
        """Milliseconds of one call of a 1-channel 1x1 convolution on one pixel: the per-call floor."""
        return self._raw("call", "conv", (1, 1, 1, 1), 1, 1, 1,
                         dict(kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1)))

    def _raw(self, key, op, shape, c_in, c_out, groups, attrs) -> float:
        if key not in self.entries:
            self.entries[key] = _time_op(self.runtime, self.device, op, shape, c_in, c_out, groups, attrs, self.threads)
            self.measured += 1
        return self.entries[key]

    def save(self) -> None:
        """Write the cache (to a temporary name, then renamed: a killed run leaves the old file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        doc = {"runtime": self.runtime, "device": self.device, "batch_size": self.batch_size,
               "threads": self.threads, "entries": self.entries}
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.path)


def _shape(layer: Layer, c_in: int, batch: int) -> tuple[int, ...]:
    shape = list(layer.shape)
    shape[0] = shape[0] * batch
    shape[1 if layer.op == "conv" else -1] = c_in
    return tuple(shape)


class Curves:
    """Per-layer latency rows and columns over each knob's grid, and the product model over them."""

    def __init__(self, space: Space, table: LatencyTable, *, progress: bool = False):
        self.space, self.table = space, table
        self.grids = [grid(k.units) for k in space.knobs]
        self.full: list[float] = []
        self.rows: list[dict[int, float]] = []  # T(C_in, c_out(k)) by kept units k of knob_out
        self.cols: list[dict[int, float]] = []  # T(c_in(k), C_out) by kept units k of knob_in
        full_keep = [k.units for k in space.knobs]
        with progress_bar(progress, len(space.layers), f"latency table ({table.runtime} {table.device} "
                                                       f"b{table.batch_size})") as advance:
            for layer in space.layers:
                self.full.append(self._at(layer, full_keep))
                row, col = {}, {}
                if layer.depthwise and layer.knob_out is not None:
                    for n in self.grids[layer.knob_out]:
                        row[n] = self._at(layer, _with(full_keep, layer.knob_out, n))
                else:
                    if layer.knob_out is not None:
                        for n in self.grids[layer.knob_out]:
                            row[n] = self._at(layer, _with(full_keep, layer.knob_out, n))
                    if layer.knob_in is not None:
                        for n in self.grids[layer.knob_in]:
                            col[n] = self._at(layer, _with(full_keep, layer.knob_in, n))
                self.rows.append(row)
                self.cols.append(col)
                advance(layer.name)
        table.save()

    def _at(self, layer: Layer, keep: list[int]) -> float:
        c_in = max(1, round(layer.c_in * keep[layer.knob_in] / self.space.knobs[layer.knob_in].units)) \
            if layer.knob_in is not None else layer.c_in
        c_out = max(1, round(layer.c_out * keep[layer.knob_out] / self.space.knobs[layer.knob_out].units)) \
            if layer.knob_out is not None else layer.c_out
        return self.table.time(layer, c_in, c_out, c_in if layer.depthwise else layer.groups)

    def layer_time(self, i: int, keep: list[int]) -> float:
        """Predicted ms of layer ``i`` when knob j keeps ``keep[j]`` units (grid points only)."""
        layer = self.space.layers[i]
        if layer.depthwise and layer.knob_out is not None:
            return self.rows[i][keep[layer.knob_out]]
        t = self.full[i]
        out = self.rows[i][keep[layer.knob_out]] if layer.knob_out is not None else t
        inn = self.cols[i][keep[layer.knob_in]] if layer.knob_in is not None else t
        return out * inn / max(t, 1e-9)

    def total(self, keep: list[int]) -> float:
        return sum(self.layer_time(i, keep) for i in range(len(self.space.layers)))

    def knob_curve(self, j: int) -> dict[int, float]:
        """Time of knob j's own layers vs its kept units, the others full: what `fast_widths` ranks."""
        curve = {}
        full = [k.units for k in self.space.knobs]
        for n in self.grids[j]:
            keep = _with(full, j, n)
            curve[n] = sum(self.layer_time(i, keep) for i, layer in enumerate(self.space.layers)
                           if j in (layer.knob_in, layer.knob_out))
        return curve


def _with(keep: list[int], j: int, n: int) -> list[int]:
    out = list(keep)
    out[j] = n
    return out


def fast_widths(curve: dict[int, float]) -> list[int]:
    """Widths no wider width beats: ``n`` stays unless some ``m > n`` runs in no more time."""
    fast, best = [], math.inf
    for n in sorted(curve, reverse=True):
        if curve[n] < best:
            fast.append(n)
            best = curve[n]
    return sorted(fast)


# Measuring one layer ---------------------------------------------------------------------------

def _time_op(runtime: str, device: str, op: str, shape: tuple, c_in: int, c_out: int, groups: int,
             attrs: dict, threads: int) -> float:
    """Fastest of 3 to 30 calls (~20 ms, after one warm-up) of one layer alone on the runtime, in ms.

    The fastest, not the median: other processes only ever add time, and on a shared machine a
    median of so few calls carries their bursts into the table, where the allocation would take a
    burst for a slow width (two runs then chose very different widths for MobileNetV2). The
    verify loop times whole models by paired rounds; the table only ranks widths."""
    if runtime == "onnxruntime":
        call = _ort_layer(device, op, shape, c_in, c_out, groups, attrs, threads)
    else:
        call = _torch_layer(device, runtime == "torch-fp16", op, shape, c_in, c_out, groups, attrs)
    sync = torch.cuda.synchronize if device == "cuda" and runtime != "onnxruntime" else (lambda: None)
    call()
    sync()
    times, started = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - started < 0.02 and len(times) < 30):
        t0 = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def _torch_layer(device, fp16, op, shape, c_in, c_out, groups, attrs):
    if op == "conv":
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(attrs["kernel"])]
        m = conv(c_in, c_out, attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"], groups)
    else:
        m = nn.Linear(c_in, c_out)
    dtype = torch.float16 if fp16 else torch.float32
    m = m.to(device, dtype).eval()
    x = torch.randn(shape, device=device, dtype=dtype)

    def call():
        with torch.inference_mode():
            m(x)

    return call


def _ort_layer(device, op, shape, c_in, c_out, groups, attrs, threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if op == "conv":
        w = rng.standard_normal((c_out, c_in // groups, *attrs["kernel"]), dtype=np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(attrs["kernel"]),
                                strides=list(attrs["stride"]), pads=list(attrs["padding"]) * 2,
                                dilations=list(attrs["dilation"]), group=groups)
        nodes = [node]
    else:
        w = rng.standard_normal((c_in, c_out), dtype=np.float32)
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    b = rng.standard_normal((c_out,), dtype=np.float32)
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = min(proto.ir_version, 9)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as `benchmark` times models
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ShrinkValueError("runtime='onnxruntime', device='cuda' needs the CUDAExecutionProvider "
                               "(install onnxruntime-gpu)")
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    feeds = {"x": rng.standard_normal(shape, dtype=np.float32)}
    return lambda: session.run(None, feeds)
