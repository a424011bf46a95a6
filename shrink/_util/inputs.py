"""Example inputs: the three shapes shrink accepts, running a model on them, naming its outputs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Union

import torch
from torch import nn

from ..errors import ShrinkTypeError, ShrinkValueError

ExampleInputs = Union[torch.Tensor, tuple, list, Mapping]


def call_args(example_inputs: ExampleInputs) -> tuple[tuple, dict]:
    """Split example inputs into positional and keyword arguments for ``model(...)``."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    raise ShrinkTypeError(
        f"example_inputs must be a tensor, a tuple/list of tensors or a dict of keyword tensors; "
        f"got {type(example_inputs).__name__}. Wrap a single tensor as `torch.randn(1, 3, 224, 224)`."
    )


def leaves(args: tuple, kwargs: dict) -> list:
    """Every input value in call order, nested tuples (an LSTM's ``(h, c)``) flattened."""
    out = []
    for value in [*args, *kwargs.values()]:
        out.extend(leaves(tuple(value), {}) if isinstance(value, (tuple, list)) else [value])
    return out


def is_nested(example_inputs: ExampleInputs) -> bool:
    """Some input is itself a tuple of tensors (a recurrent state passed in)."""
    args, kwargs = call_args(example_inputs)
    return any(isinstance(v, (tuple, list)) for v in [*args, *kwargs.values()])


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration (no BatchNorm statistics updated, no dropout), then as it was."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


def run(model: nn.Module, example_inputs: ExampleInputs) -> Any:
    """Run ``model`` in eval mode on the example inputs; a failure becomes one clear `ShrinkValueError`."""
    args, kwargs = call_args(example_inputs)
    try:
        with evaluating(model), same_draws():
            return model(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure here means the inputs do not fit
        raise ShrinkValueError(
            f"the model cannot run on the example inputs ({describe(example_inputs)}): "
            f"{type(exc).__name__}: {exc}. Pass inputs with the shape and dtype the model's forward expects."
        ) from exc


@contextmanager
def same_draws():
    """Every run starts from one random state, and the caller's state is put back after: a model
    that draws in its forward (ViT-MAE's random masking, UnivNet's noise) computes the same thing
    on the same inputs, so the runs shrink compares (a cut against its reference, a folder read
    back) differ only by what changed."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        yield


def to(example_inputs: ExampleInputs, device, dtype: torch.dtype | None = None) -> ExampleInputs:
    """The same inputs on ``device`` (float tensors also cast to ``dtype`` when given)."""
    args, kwargs = call_args(example_inputs)

    def one(t):
        if not isinstance(t, torch.Tensor):
            return t
        t = t.to(device)
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    if kwargs:
        return {k: one(v) for k, v in kwargs.items()}
    return tuple(one(a) for a in args)


def requiring_grad(example_inputs: ExampleInputs) -> ExampleInputs:
    """The same inputs, float tensors replaced by detached copies that require grad."""
    args, kwargs = call_args(example_inputs)

    def one(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.detach().clone().requires_grad_(True)
        return value

    if kwargs:
        return {k: one(v) for k, v in kwargs.items()}
    return tuple(one(a) for a in args)


def flatten_outputs(output: Any, prefix: str = "output") -> dict[str, torch.Tensor]:
    """Every tensor in a model's output, by a readable name (``logits``, ``output_0``, ...)."""
    found: dict[str, torch.Tensor] = {}
    if isinstance(output, torch.Tensor):
        found[prefix] = output
    elif isinstance(output, Mapping):  # dicts and Hugging Face ModelOutput
        for key, value in output.items():
            name = str(key) if prefix == "output" else f"{prefix}.{key}"
            found.update(flatten_outputs(value, name))
    elif isinstance(output, (tuple, list)):
        for i, value in enumerate(output):
            found.update(flatten_outputs(value, f"{prefix}_{i}"))
    return found


# What a Hugging Face task model returns beside its task outputs (logits, start/end logits, ...):
# states whose width follows the config after a cut, as they do in the model the folder rebuilds.
_STATES = re.compile(r"^(encoder_|decoder_)?(last_hidden_state|hidden_states|attentions|cross_attentions|"
                     r"pooler_output|past_key_values)(_\d+)*$")


def task_outputs(found: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``found`` (from `flatten_outputs`) less the hidden states a model with logits returns beside
    them: a seq2seq model's ``encoder_last_hidden_state`` is no task output, so the hidden width
    may narrow while the logits keep their shape."""
    if not any(k.split(".")[0].endswith("logits") for k in found):
        return found
    return {k: v for k, v in found.items() if not _STATES.match(k.split(".")[0])}


def describe(example_inputs: ExampleInputs) -> str:
    """A short human description such as ``float32[1x3x32x32]``."""
    try:
        args, kwargs = call_args(example_inputs)
    except ShrinkTypeError:
        return type(example_inputs).__name__
    parts = [_describe_one(a) for a in args] + [f"{k}={_describe_one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _describe_one(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_describe_one(v) for v in value) + ")"
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return f"{dtype}[{'x'.join(str(s) for s in value.shape)}]"
    return type(value).__name__


def to_spec(example_inputs: ExampleInputs) -> dict:
    """A JSON-able description of the inputs (shapes and dtypes), enough to rebuild look-alikes."""
    args, kwargs = call_args(example_inputs)

    def one(value: Any) -> dict:
        if isinstance(value, (tuple, list)):  # nested state such as an LSTM's (h, c)
            return {"tuple": [one(v) for v in value]}
        if not isinstance(value, torch.Tensor):
            raise ShrinkTypeError(
                f"example inputs must all be tensors (or tuples of tensors) to be recorded in a plan; "
                f"found {type(value).__name__}"
            )
        return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}

    return {"args": [one(a) for a in args], "kwargs": {k: one(v) for k, v in kwargs.items()}}


def from_spec(spec: Mapping) -> ExampleInputs:
    """Inputs with the recorded shapes and dtypes: random floats, zeros for integer ids and masks."""
    generator = torch.Generator().manual_seed(0)
    if not isinstance(spec, Mapping) or not isinstance(spec.get("args", []), list) or not isinstance(
            spec.get("kwargs", {}), Mapping):
        raise ShrinkValueError(f"recorded inputs must look like {{'args': [...], 'kwargs': {{...}}}}; got {spec!r:.80}")

    def one(entry: Mapping):
        if isinstance(entry, Mapping) and "tuple" in entry:
            if not isinstance(entry["tuple"], list):
                raise ShrinkValueError(f"a recorded tuple input must be {{'tuple': [...]}}; got {entry!r:.80}")
            return tuple(one(e) for e in entry["tuple"])
        _check_entry(entry)
        dtype = getattr(torch, entry["dtype"])
        if dtype.is_floating_point:
            return torch.randn(entry["shape"], generator=generator).to(dtype)
        if dtype == torch.bool:
            return torch.ones(entry["shape"], dtype=dtype)
        return torch.ones(entry["shape"], dtype=dtype)  # valid token ids and attention masks

    args = tuple(one(a) for a in spec.get("args", []))
    kwargs = {k: one(v) for k, v in spec.get("kwargs", {}).items()}
    if kwargs:
        if args:
            raise ShrinkValueError("a plan records either positional or keyword inputs, not both")
        return kwargs
    return args[0] if len(args) == 1 else args


MAX_RECORDED_ELEMENTS = 10**8  # a plan naming a larger input is damaged or hostile, not a model's inputs


def _check_entry(entry) -> None:
    """One recorded input: {"shape": [ints >= 0], "dtype": a torch dtype name}, of a sane size."""
    ok = isinstance(entry, Mapping) and isinstance(entry.get("shape"), list) and isinstance(entry.get("dtype"), str)
    ok = ok and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in entry["shape"])
    ok = ok and isinstance(getattr(torch, entry["dtype"], None), torch.dtype)
    if not ok:
        raise ShrinkValueError(f"a recorded input must be {{'shape': [1, 3, 32, 32], 'dtype': 'float32'}}; got {entry!r:.80}")
    elements = 1
    for n in entry["shape"]:
        elements *= n
    if elements > MAX_RECORDED_ELEMENTS:
        raise ShrinkValueError(f"a recorded input of shape {entry['shape']} has {elements:,} elements, more than "
                               f"{MAX_RECORDED_ELEMENTS:,}; pass smaller example inputs")


def batch_of(example_inputs: ExampleInputs) -> int:
    """Dimension 0 of the first input that has one (1 if none has)."""
    args, kwargs = call_args(example_inputs)
    return next((a.shape[0] for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor) and a.dim()), 1)


def with_batch(example_inputs, batch: int, *, seed: int = 0):
    """Inputs like the example but with ``batch`` rows: fresh random values of the same kind."""
    args, kwargs = call_args(example_inputs)
    g = torch.Generator().manual_seed(seed)

    def one(t):
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        shape = (batch, *t.shape[1:])
        if t.is_floating_point():
            return torch.randn(shape, generator=g).to(t.dtype).to(t.device)
        if t.dtype == torch.bool:
            return t[:1].expand(shape).clone()
        high = int(t.max()) + 1 if t.numel() else 1
        low = int(t.min()) if t.numel() else 0
        return torch.randint(low, max(high, low + 1), shape, generator=g, dtype=t.dtype).to(t.device)

    if kwargs:
        return {k: one(v) for k, v in kwargs.items()}
    out = tuple(one(a) for a in args)
    return out[0] if isinstance(example_inputs, torch.Tensor) else out
