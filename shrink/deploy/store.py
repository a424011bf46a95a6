"""`save` and `load`: a compressed model as safetensors weights plus a JSON plan. Nothing pickled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .._util.clone import clone
from .._util.versions import __version__
from .._util import checks, snapshot
from .._util import inputs as _inputs
from ..cut import graph, layout
from .._util.atomic import atomic_folder
from ..errors import PlanMismatchError, ShrinkError, ShrinkTypeError, ShrinkValueError
from .._util.hashing import state_hash
from ..cut.compress import Result
from ..cut.plan import Plan
from ..cut.surgery import Tracker, apply_steps

WEIGHTS = "model.safetensors"
VALUES = "values.safetensors"  # tensors outside the state dict whose values the cut changed (cut/layout.py)
PLAN = "plan.json"
MAX_PLAN_BYTES = 256 * 2**20  # kept indices of a 70B-parameter model take a few MB


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with each shared tensor stored once (safetensors refuses aliases)."""
    state, seen = {}, {}
    for key, value in model.state_dict(keep_vars=False).items():
        ptr = (value.data_ptr(), tuple(value.shape), value.dtype) if value.numel() else None
        if ptr is not None and ptr in seen:
            continue
        if ptr is not None:
            seen[ptr] = key
        state[key] = value.detach().cpu().contiguous()
    return state


def save(result, folder: str | os.PathLike, *, overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/plan.json``.

    The folder is written under a temporary name and renamed, so a failure leaves nothing behind.

    Args:
        result: a `Result` from `compress`.
        folder: where to write; must not exist unless ``overwrite=True``.
        overwrite: replace an existing folder.
        extra: more fields for plan.json (the CLI records the model factory here).

    Returns:
        The folder's path.
    """
    if not isinstance(result, Result):
        hint = (" Pass the Result that shrink.compress returned (it holds the plan `load` replays), not "
                "`result.model`; an un-pruned model's weights go in `torch.save(model.state_dict(), path)`.")
        raise ShrinkTypeError(f"save takes a shrink Result; got {type(result).__name__}.{hint}")
    if extra is not None and not isinstance(extra, dict):
        raise ShrinkTypeError(f"extra must be a dict of JSON fields; got {type(extra).__name__}")
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        write_into(result, tmp, extra=extra)
    return Path(folder)


def write_into(result, folder: Path, *, extra: dict | None = None) -> None:
    """The files of `save`, written into an existing folder."""
    from safetensors.torch import save_file

    state = _plain_state(result.model)
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", "shrink": __version__})
    values = layout.value_tensors(result.plan.layout, result.model) if layout.usable(result.plan.layout) else {}
    if values:
        save_file(values, str(folder / VALUES), metadata={"format": "pt", "shrink": __version__})
    doc = {
        "shrink_version": __version__,
        "torch_version": torch.__version__,
        "weights_sha256": state_hash(state),
        **({"values_sha256": state_hash(values)} if values else {}),
        "before": result.before.to_dict(),
        "after": result.after.to_dict(),
        **result.plan.to_dict(),
        **(extra or {}),
    }
    (folder / PLAN).write_text(json.dumps(doc, indent=1))


def read_plan_json(folder: str | os.PathLike) -> dict:
    """The whole plan.json of a folder written by `save` (plan, versions, hashes, extras)."""
    if not isinstance(folder, (str, os.PathLike)):
        raise ShrinkTypeError(f"folder must be a path (str or pathlib.Path); got {type(folder).__name__}")
    path = Path(folder) / PLAN
    if not Path(folder).is_dir():
        raise ShrinkValueError(f"{str(folder)!r} is not a folder; pass a folder written by shrink.save")
    if not path.is_file():
        raise ShrinkValueError(f"{str(path)!r} not found; pass a folder written by shrink.save")
    damaged = "the file is damaged or cut short; write the folder again with shrink.save (or restore it from a copy)"
    if path.stat().st_size > MAX_PLAN_BYTES:
        raise PlanMismatchError(f"{str(path)!r} is {path.stat().st_size:,} bytes, more than any plan shrink writes "
                                f"({MAX_PLAN_BYTES:,}): it is not a plan; write the folder again with shrink.save")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PlanMismatchError(f"{str(path)!r} is not text (UTF-8 JSON): {damaged}") from exc
    except json.JSONDecodeError as exc:
        raise PlanMismatchError(f"{str(path)!r} is not valid JSON ({exc}): {damaged}") from exc
    except (OSError, RecursionError) as exc:
        raise PlanMismatchError(f"{str(path)!r} cannot be read ({type(exc).__name__}): {damaged}") from exc
    if not isinstance(doc, dict):
        raise PlanMismatchError(f"{str(path)!r} holds a JSON {type(doc).__name__}, not a plan object: {damaged}")
    return doc


def _read_plan(folder, doc: dict) -> Plan:
    try:
        plan = Plan.from_dict(doc)
        _inputs.from_spec(plan.inputs)
        return plan
    except ShrinkValueError as exc:
        raise PlanMismatchError(f"{str(Path(folder) / PLAN)!r} is not a plan shrink can replay: {exc}. "
                                "Write the folder again with shrink.save.") from exc


def _read_weights(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ShrinkValueError(f"{str(path)!r} not found; pass a folder written by shrink.save")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise PlanMismatchError(
            f"{str(path)!r} is not a readable safetensors file ({type(exc).__name__}: {first}): it is damaged or "
            "cut short; write the folder again with shrink.save (or restore it from a copy)."
        ) from exc


def load(folder: str | os.PathLike, base_model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Give a fresh un-pruned model the saved plan's layout, and load the saved weights into it.

    The plan records every tensor's new shape and every attribute's new value (cut/layout.py), so
    the model is not traced; plans written before shrink recorded layouts, or by cuts a layout
    cannot describe, are replayed step by step on a trace of ``base_model`` instead.

    Args:
        folder: a folder written by `save`.
        base_model: a freshly built instance of the un-pruned architecture (its weights do not matter).
        inplace: cut ``base_model`` itself instead of a copy.

    Returns:
        The compressed model, equal to the one that was saved.

    Raises:
        PlanMismatchError: the plan or the weights do not fit ``base_model``.
    """
    checks.module(base_model, what="base_model")
    doc = read_plan_json(folder)
    plan = _read_plan(folder, doc)
    weights = Path(folder) / WEIGHTS
    # Everything on disk is read and checked before the model is touched (inplace=True cuts it).
    state = _read_weights(weights)
    if doc.get("weights_sha256") and state_hash(state) != doc["weights_sha256"]:
        raise PlanMismatchError(f"{str(weights)!r} does not match the hash recorded in plan.json: "
                                "the file was changed or is corrupt; write the folder again with shrink.save")
    values = {}
    if layout.usable(plan.layout) and plan.layout.get("values"):
        values = _read_weights(Path(folder) / VALUES)
        if doc.get("values_sha256") and state_hash(values) != doc["values_sha256"]:
            raise PlanMismatchError(f"{str(Path(folder) / VALUES)!r} does not match the hash recorded in plan.json: "
                                    "the file was changed or is corrupt; write the folder again with shrink.save")
    model = base_model if inplace else clone(base_model)
    before = snapshot.take(model) if inplace else None
    try:
        if layout.usable(plan.layout):
            layout.apply(plan.layout, model, values)
            return _load_state(model, state)
        return _replay(folder, doc, plan, state, model, base_model)
    except BaseException:
        if before is not None:  # a refusal leaves the caller's model as it came
            snapshot.restore(before)
        raise


def _replay(folder, doc: dict, plan: Plan, state: dict, model: nn.Module, base_model: nn.Module) -> nn.Module:
    """Cut ``model`` as the plan says, then load ``state`` into it (checked first)."""
    example_inputs = _inputs.from_spec(plan.inputs)
    rounds = sorted({step.round for step in plan.steps}) or [0]
    for k in rounds:  # iterative plans: each round was cut on a fresh trace of the model as it then was
        try:
            traced = graph.trace(model, example_inputs, ignore=())
        except PlanMismatchError:
            raise
        except ShrinkValueError as exc:
            raise PlanMismatchError(
                f"base_model does not fit the plan: {exc} The plan was traced on inputs "
                f"{_inputs.describe(example_inputs)}; build base_model with the architecture the plan was made from."
            ) from exc
        try:
            apply_steps(model, traced.dg, traced.blocks, [s for s in plan.steps if s.round == k], Tracker(),
                        traced.seen)
        except ShrinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - a foreign plan fails anywhere inside the cutting code
            raise PlanMismatchError(
                f"the plan in {str(Path(folder) / PLAN)!r} does not fit base_model ({type(base_model).__name__}): "
                f"replaying it failed with {type(exc).__name__}: {str(exc)[:200]}. Build base_model with the "
                "architecture and configuration the plan was made from."
            ) from exc
    return _load_state(model, state)


def _load_state(model: nn.Module, state: dict) -> nn.Module:
    """Load ``state`` into the cut ``model``, checked first for names and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    # Tied tensors are stored once: fill the other names from the tensor they share.
    aliases = _aliases(model)
    missing = [k for k in missing if k not in aliases]
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or extra or wrong:
        raise PlanMismatchError(
            f"the saved weights do not fit the model the plan describes: missing {missing}, "
            f"unexpected {extra}, other shapes {wrong}. Was base_model built with the same configuration?"
        )
    model.load_state_dict(state, strict=False)
    return model


def _aliases(model: nn.Module) -> set[str]:
    """state_dict names of tensors that another name also holds (tied weights are stored once)."""
    state = model.state_dict(keep_vars=True)
    seen: dict[int, int] = {}
    for value in state.values():
        seen[id(value)] = seen.get(id(value), 0) + 1
    return {k for k, v in state.items() if seen[id(v)] > 1}
