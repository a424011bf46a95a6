"""What the CLI needs to build a model from words: factories, checkpoints, input shapes."""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import ShrinkTypeError, ShrinkValueError

_DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64, "int64": torch.int64, "long": torch.int64, "int32": torch.int32,
           "bool": torch.bool}


def build_model(spec: str) -> nn.Module:
    """Call ``package.module:factory`` and return the module it builds."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ShrinkValueError(f"--model must look like 'package.module:factory'; got {spec!r}")
    if os.getcwd() not in sys.path:  # console scripts do not see the current folder; `python -m` does
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ShrinkValueError(f"cannot import {module_name!r} (from --model {spec!r}): {exc}. "
                               "Run from the folder that holds the package, or install it.") from exc
    except SyntaxError as exc:
        raise ShrinkValueError(f"{module_name!r} (from --model {spec!r}) has a syntax error: {exc.msg} in "
                               f"{exc.filename}, line {exc.lineno}. Fix the file and run again.") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module ran and failed; say so in one line
        raise ShrinkValueError(f"importing {module_name!r} (from --model {spec!r}) raised {_first_line(exc)}. "
                               "Fix the module (run `python -c 'import " + module_name + "'` to see the "
                               "traceback), or pass --debug.") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ShrinkValueError(f"{module_name!r} has no callable {attr!r} (from --model {spec!r})")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - the user's factory failed; say so in one line
        raise ShrinkValueError(f"--model {spec!r}: calling {attr}() raised {_first_line(exc)}. The factory must "
                               "build the model with no arguments; pass --debug to see the traceback.") from exc
    if not isinstance(model, nn.Module):
        raise ShrinkTypeError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or a ``.pt``/``.pth`` file loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise ShrinkValueError(f"weights file {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ShrinkValueError(
                f"{str(path)!r} is not a readable .safetensors file ({_first_line(exc)}); it was not loaded. "
                "Write it again with safetensors.torch.save_file(model.state_dict(), path)."
            ) from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; none of them ran code
        # One line, and never torch's advice to retry with weights_only=False: that would run the
        # file's pickled code.
        refused = "weights only load failed" in str(exc).lower()
        what = ("holds Python objects besides tensors, which a weights-only load refuses" if refused
                else "is not a PyTorch checkpoint that torch.load can read")
        raise ShrinkValueError(
            f"{str(path)!r} {what}; it was not loaded. Save a plain state_dict with "
            "torch.save(model.state_dict(), path) or safetensors.torch.save_file(model.state_dict(), path)."
        ) from exc
    for key in ("state_dict", "model_state_dict", "model"):  # Lightning and common training scripts
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ShrinkValueError(f"{str(path)!r} does not hold a state_dict of tensors")
    return dict(obj)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Load ``state`` strictly, stripping DataParallel/Lightning ``module.``/``model.`` prefixes if needed."""
    expected = model.state_dict()
    state = dict(state)
    for prefix in ("module.", "model."):
        if not set(state) & set(expected) and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or extra or wrong:
        raise ShrinkValueError(
            f"{source} do not fit the model: missing keys {_few(missing)}, unexpected keys {_few(extra)}, "
            f"other shapes {_few(wrong)}. Check that --model builds the architecture these weights came from."
        )
    model.load_state_dict(state)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _few(keys: list[str], n: int = 5) -> str:
    return str(keys[:n])[:-1] + (f", ... +{len(keys) - n} more]" if len(keys) > n else "]")


MAX_INPUT_ELEMENTS = 10**8


def parse_inputs(specs: list[str]):
    """``1x3x224x224``, ``int64:1x16`` or ``input_ids=int64:1x16`` (named, passed as keywords)."""
    if not specs:
        raise ShrinkValueError("give the input shape with --input, e.g. --input 1x3x224x224 or --input int64:1x16")
    args, kwargs = [], {}
    gen = torch.Generator().manual_seed(0)
    for spec in specs:
        name, _, rest = spec.rpartition("=")
        dtype_name, _, shape_text = rest.rpartition(":")
        dtype = _DTYPES.get(dtype_name or "float32")
        if dtype is None or not re.fullmatch(r"\d+(x\d+)*", shape_text):
            raise ShrinkValueError(
                f"--input {spec!r} is not a shape like 1x3x224x224 or int64:1x16 (dtypes: {sorted(_DTYPES)})"
            )
        shape = [int(s) for s in shape_text.split("x")]
        if 0 in shape:
            raise ShrinkValueError(f"--input {spec!r} has an empty dimension; every size must be >= 1, e.g. 1x3x224x224")
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise ShrinkValueError(f"--input {spec!r} has {math.prod(shape):,} elements, more than "
                                   f"{MAX_INPUT_ELEMENTS:,}; an example input needs one small batch (e.g. 1x3x224x224)")
        if dtype.is_floating_point:
            tensor = torch.randn(shape, generator=gen).to(dtype)
        elif dtype == torch.bool:
            tensor = torch.ones(shape, dtype=dtype)
        else:
            tensor = torch.randint(0, 2, shape, generator=gen).to(dtype)
        if name:
            kwargs[name] = tensor
        else:
            args.append(tensor)
    if args and kwargs:
        raise ShrinkValueError("name every --input (name=shape) or none of them")
    if kwargs:
        return kwargs
    return args[0] if len(args) == 1 else tuple(args)
