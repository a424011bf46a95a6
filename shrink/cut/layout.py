"""A cut model's layout: what `load` needs to rebuild it from the un-pruned architecture, untraced.

A saved folder holds the cut weights. To load them, a fresh un-pruned model only has to take the
cut model's *layout*: every parameter and buffer at its new shape, and every plain attribute its
forward reads (``in_features``, ``num_heads``, ``normalized_shape``, a config's ``hidden_size``)
at its new value. `record` notes the layout before the cut, `diff` compares the cut model with it
and returns what changed, and `apply` makes those changes on another instance, so loading needs
no trace: a folder reloads the same with any future tracer.

Tensors the weights file does not hold (non-persistent buffers, tensors kept as plain attributes)
and whose values the cut changed are listed under ``values``; `save` writes them beside the
weights. A change that is no plain value (a submodule replaced, an object swapped for another)
cannot be described: `diff` then says why, and `load` replays the plan's steps instead.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import PlanMismatchError

log = logging.getLogger(__name__)
_FIX = " Load the folder onto an instance of the architecture, built with the configuration, the plan was made from."

FORMAT = 1
_BOOKKEEPING = frozenset(vars(nn.Module()))  # nn.Module's own dicts and flags: not the layout
_ABSENT = {"absent": True}  # an attribute the model does not have
_DEPTH = 3  # objects held by modules (a config, its sub-configs) are followed this deep
# Caches a module rebuilds from its parameters, not part of the layout: (type, attributes, rebuild).
_DERIVED = ((nn.RNNBase, ("_flat_weights", "_flat_weight_refs"), lambda m: m._init_flat_weights()),)


@dataclass(frozen=True)
class Before:
    """The layout of a model before the cut (see `record`)."""

    shapes: dict[str, tuple[int, ...]]
    digests: dict[str, str]
    attributes: dict[tuple[str, tuple[str, ...]], object]
    modules: dict[str, str]


def record(model: nn.Module) -> Before:
    """Every tensor's shape, the digest of every tensor a state dict leaves out, every plain attribute."""
    shapes, digests = {}, {}
    for name, (_, _, kind, tensor) in _tensors(model).items():
        shapes[name] = tuple(tensor.shape)
        if kind != "param" and not _persistent(model, name, kind):
            digests[name] = _digest(tensor)
    return Before(shapes, digests, _attributes(model), _module_types(model))


def diff(before: Before, model: nn.Module) -> tuple[dict | None, str]:
    """(layout, "") describing how ``model`` differs from ``before``; (None, why) where it cannot."""
    if _module_types(model) != before.modules:
        gone = sorted(set(before.modules.items()) ^ set(_module_types(model).items()))[:3]
        return None, f"the cut added, removed or replaced submodules ({', '.join(f'{n!r} ({t})' for n, t in gone)})"
    tensors, values = {}, []
    now = _tensors(model)
    if set(now) != set(before.shapes):
        changed = sorted(set(now) ^ set(before.shapes))[:3]
        return None, f"the cut added or removed tensors ({', '.join(map(repr, changed))})"
    for name, (_, _, kind, tensor) in now.items():
        if tuple(tensor.shape) != before.shapes[name]:
            tensors[name] = [list(before.shapes[name]), list(tensor.shape)]
        if name in before.digests and (name in tensors or _digest(tensor) != before.digests[name]):
            values.append(name)
    attributes = []
    after = _attributes(model)
    for key in sorted(set(before.attributes) | set(after)):
        old, new = before.attributes.get(key, _ABSENT), after.get(key, _ABSENT)
        if _same(old, new):
            continue
        if isinstance(old, _Opaque) or isinstance(new, _Opaque):
            return None, f"attribute {_path(key)!r} changed to a value that is not plain data"
        attributes.append({"module": key[0], "path": list(key[1]), "before": _encode(old), "after": _encode(new)})
    return {"format": FORMAT, "tensors": tensors, "attributes": attributes, "values": sorted(values)}, ""


def describe(before: Before, model: nn.Module) -> dict:
    """The layout a plan stores: `diff`'s, or ``{"format": 1, "unavailable": why}``."""
    found, why = diff(before, model)
    if found is None:
        log.info("load will replay the plan's steps: %s", why)
        return {"format": FORMAT, "unavailable": why}
    return found


def usable(layout: dict) -> bool:
    """Whether `apply` can rebuild the model from ``layout`` (else `load` replays the steps)."""
    return isinstance(layout, dict) and "tensors" in layout


def apply(layout: dict, model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Give ``model`` (an un-pruned instance) the cut layout; ``values``: the tensors listed under ``values``.

    Raises:
        PlanMismatchError: ``model`` is not the architecture the layout was recorded on.
    """
    if not isinstance(layout, dict) or layout.get("format") != FORMAT:
        raise PlanMismatchError(f"the plan's layout is not in a format this shrink reads ({FORMAT}); "
                                "write the folder again with this version of shrink")
    owners = _tensors(model)
    for name, (old, new) in layout["tensors"].items():
        if name not in owners:
            raise PlanMismatchError(f"the plan resizes {name!r}, which base_model does not have." + _FIX)
        if list(owners[name][3].shape) != list(old):
            raise PlanMismatchError(f"base_model's {name!r} has shape {list(owners[name][3].shape)}; the plan was "
                                    f"made from a model where it is {list(old)}." + _FIX)
    checked = []
    for entry in layout["attributes"]:
        holder, attr = _holder(model, entry)
        current = getattr(holder, attr, _ABSENT) if holder is not None else _ABSENT
        if not _same(_plain(current), _decode(entry["before"])):
            raise PlanMismatchError(f"base_model's {_path((entry['module'], tuple(entry['path'])))!r} is {current!r}; "
                                    f"the plan was made from a model where it is {_decode(entry['before'])!r}." + _FIX)
        checked.append((holder, attr, _decode(entry["after"])))
    missing = sorted(set(layout["values"]) - set(values))
    if missing:
        raise PlanMismatchError(f"the saved folder lacks the values of {missing}; write it again with shrink.save")
    replaced: dict[int, torch.Tensor] = {}  # a tensor held in several places (tied weights) stays one tensor
    for name, (_, new) in layout["tensors"].items():
        module, attr, kind, old = owners[name]
        if id(old) not in replaced:
            fresh = torch.empty(new, dtype=old.dtype, device=old.device)
            replaced[id(old)] = nn.Parameter(fresh, requires_grad=old.requires_grad) if kind == "param" else fresh
        _put(module, attr, kind, replaced[id(old)])
    for name in layout["values"]:
        module, attr, kind, old = _tensors(model)[name]
        value = values[name].to(device=old.device, dtype=old.dtype)
        _put(module, attr, kind, value)
    for holder, attr, value in checked:
        if value is _ABSENT or value == _ABSENT:
            delattr(holder, attr)
        else:
            setattr(holder, attr, value)
    for module in model.modules():
        for kind, _, rebuild in _DERIVED:
            if isinstance(module, kind):
                rebuild(module)


def value_tensors(layout: dict, model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors `save` writes beside the weights: those listed under the layout's ``values``."""
    owners = _tensors(model)
    return {name: owners[name][3].detach().cpu().contiguous() for name in layout.get("values", ())}


class _Opaque:
    """An attribute value that is not plain data, compared by identity."""

    def __init__(self, value) -> None:
        self.id = id(value)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Opaque) and other.id == self.id


def _tensors(model: nn.Module) -> dict[str, tuple[nn.Module, str, str, torch.Tensor]]:
    """name -> (module, attribute, "param" | "buffer" | "tensor", value) for every tensor place."""
    found = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        for attr, value in module._parameters.items():
            if value is not None:
                found[dot + attr] = (module, attr, "param", value)
        for attr, value in module._buffers.items():
            if value is not None:
                found[dot + attr] = (module, attr, "buffer", value)
        for attr, value in vars(module).items():
            if attr not in _BOOKKEEPING and isinstance(value, torch.Tensor):
                found[dot + attr] = (module, attr, "tensor", value)
    return found


def _persistent(model: nn.Module, name: str, kind: str) -> bool:
    if kind != "buffer":
        return False
    prefix, _, attr = name.rpartition(".")
    return attr not in model.get_submodule(prefix)._non_persistent_buffers_set


def _put(module: nn.Module, attr: str, kind: str, value: torch.Tensor) -> None:
    if kind == "param":
        module._parameters[attr] = value
    elif kind == "buffer":
        module._buffers[attr] = value
    else:
        object.__setattr__(module, attr, value)


def _digest(tensor: torch.Tensor) -> str:
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}:{t.dtype}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _module_types(model: nn.Module) -> dict[str, str]:
    return {n: f"{type(m).__module__}.{type(m).__qualname__}" for n, m in model.named_modules(remove_duplicate=False)}


def _attributes(model: nn.Module) -> dict[tuple[str, tuple[str, ...]], object]:
    """(module name, attribute path) -> plain value (or `_Opaque`), each object visited once."""
    found: dict = {}
    seen: set[int] = set()

    def visit(name: str, path: tuple[str, ...], obj, depth: int) -> None:
        derived = {a for kind, attrs, _ in _DERIVED if isinstance(obj, kind) for a in attrs}
        for attr, value in list(vars(obj).items()):
            if (not path and attr in _BOOKKEEPING) or isinstance(value, (torch.Tensor, nn.Module)) or attr in derived:
                continue
            plain = _plain(value)
            found[(name, (*path, attr))] = plain
            if isinstance(plain, _Opaque) and depth < _DEPTH and _followed(value) and id(value) not in seen:
                seen.add(id(value))
                visit(name, (*path, attr), value, depth + 1)

    for name, module in model.named_modules():
        visit(name, (), module, 1)
    return found


def _followed(value) -> bool:
    """Objects whose own attributes are part of the layout (a config), not functions or classes."""
    return hasattr(value, "__dict__") and not callable(value) and not isinstance(value, type)


def _plain(value):
    """``value`` if it is plain data (numbers, strings, tuples, lists and dicts of them), else `_Opaque`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, (tuple, list)) and all(not isinstance(_plain(v), _Opaque) for v in value):
        return value
    if isinstance(value, dict) and all(isinstance(k, str) and not isinstance(_plain(v), _Opaque)
                                       for k, v in value.items()):
        return value
    return _Opaque(value)


def _same(a, b) -> bool:
    if isinstance(a, _Opaque) or isinstance(b, _Opaque):
        return a == b
    return type(a) is type(b) and (a == b or (isinstance(a, float) and a != a and b != b))


def _encode(value):
    """JSON for a plain value, keeping tuples apart from lists."""
    if value is _ABSENT:
        return _ABSENT
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    return value


def _decode(value):
    if isinstance(value, dict):
        if value.get("absent"):
            return _ABSENT
        if "tuple" in value:
            return tuple(_decode(v) for v in value["tuple"])
        return {k: _decode(v) for k, v in value["dict"].items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _holder(model: nn.Module, entry: dict):
    """(the object holding the attribute, its name); the object is None where a step of the path is missing."""
    try:
        obj = model.get_submodule(entry["module"])
    except AttributeError:
        raise PlanMismatchError(f"the plan changes {entry['module']!r}, which base_model does not have." + _FIX) from None
    *through, attr = entry["path"]
    for step in through:
        obj = getattr(obj, step, None)
        if obj is None:
            return None, attr
    return obj, attr


def _path(key: tuple[str, tuple[str, ...]]) -> str:
    return ".".join(p for p in (key[0], *key[1]) if p)
