"""Checkpoints `fit` resumes from: one safetensors file, written under a temporary name and renamed.

What it holds, enough for a rerun to reach the same weights as a run never interrupted:

1. the model's full state dict (shards gathered) and the optimiser's state, keyed by parameter name;
2. where the run stands: epochs finished, batches consumed in the current epoch, optimiser steps,
   the current epoch's running loss per rank, the history so far, the GradScaler's state;
3. every rank's random state twice: now, and at the start of the current epoch (torch, CUDA,
   Python's `random`, NumPy's when imported, and the loader's own generators). A resumed epoch
   restores the second, starts the loader (so a shuffle draws the same order), skips the batches
   already seen, then restores the first.

Tensors are stored as tensors and the rest as JSON in the file's metadata; nothing is pickled.
A checkpoint is written only between optimiser steps (never mid-accumulation) and resumes only
with the same number of processes and the same ``accumulate``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .._util.atomic import atomic_file, check_destination
from ..errors import ShrinkTypeError, ShrinkValueError
from .distributed import Context, barrier, full_tensor, gather_objects, like

log = logging.getLogger(__name__)

VERSION = 1
_KEY = "shrink_checkpoint"


def check_path(path) -> Path | None:
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ShrinkTypeError(f"checkpoint must be a file path (str or pathlib.Path); got {type(path).__name__}")
    return check_destination(path, overwrite=True, kind="file")


# --- random state --------------------------------------------------------------------------------

def generators(loader) -> list[torch.Generator]:
    """The torch.Generator objects a DataLoader draws its order from (loader, sampler, batch sampler)."""
    found: list[torch.Generator] = []
    owners = [loader, getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)]
    for owner in owners:
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def capture_rng(loader) -> dict:
    """This process's random state: tensors under their names, and Python/NumPy's as JSON."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    state.update({f"gen.{i}": g.get_state() for i, g in enumerate(generators(loader))})
    version, internal, gauss = random.getstate()
    state["python"] = [version, list(internal), gauss]
    if "numpy" in sys.modules:
        name, keys, pos, has_gauss, cached = sys.modules["numpy"].random.get_state()
        state["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    return state


def restore_rng(state: dict, loader) -> None:
    torch.set_rng_state(state["torch"])
    cuda = [state[k] for k in sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    for i, g in enumerate(generators(loader)):
        if f"gen.{i}" in state:
            g.set_state(state[f"gen.{i}"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in state and "numpy" in sys.modules:
        np = sys.modules["numpy"]
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# --- the file ------------------------------------------------------------------------------------

@dataclass
class Progress:
    """Where a run stands.

    Attributes:
        epoch: epochs finished. batches: batches of the current epoch consumed (per rank).
        step: optimiser steps taken. history: one record per finished epoch.
        ranks: per rank: ``loss_sum``/``count`` of the current epoch, ``now``/``epoch_start`` random state.
        scaler: the GradScaler's state (fp16), or None.
    """

    epoch: int = 0
    batches: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    ranks: list = field(default_factory=list)
    scaler: dict | None = None


def save(path: Path, wrapped: nn.Module, optimiser: torch.optim.Optimizer, progress: Progress, rank_state: dict,
         ctx: Context, *, accumulate: int) -> None:
    """Write the checkpoint (every rank calls this: shards and random states are gathered; rank 0 writes)."""
    from .distributed import inner

    module = inner(wrapped)
    tensors = {f"model/{k}": full_tensor(v).detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    names = [n for n, _ in module.named_parameters()]
    optim = optimiser.state_dict()
    plain: dict = {}
    for index, entry in sorted(optim["state"].items()):
        name = names[index]
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{name}/{key}"] = full_tensor(value).detach().cpu().clone().contiguous()
            else:
                plain.setdefault(name, {})[key] = value
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[i] for i in g["params"]]}
              for g in optim["param_groups"]]
    ranks = gather_objects(rank_state, ctx)
    if ctx.main:
        meta_ranks = []
        for r, state in enumerate(ranks):
            json_part = {}
            for when in ("now", "epoch_start"):
                json_part[when] = {k: v for k, v in state[when].items() if not isinstance(v, torch.Tensor)}
                tensors.update({f"rank{r}/{when}/{k}": v.contiguous() for k, v in state[when].items()
                                if isinstance(v, torch.Tensor)})
            meta_ranks.append({"loss_sum": state["loss_sum"], "count": state["count"], **json_part})
        meta = {"version": VERSION, "epoch": progress.epoch, "batches": progress.batches, "step": progress.step,
                "world_size": ctx.world_size, "accumulate": accumulate, "history": progress.history,
                "param_groups": groups, "optim_plain": plain, "scaler": progress.scaler, "ranks": meta_ranks}
        from safetensors.torch import save_file

        with atomic_file(path, overwrite=True) as tmp:
            save_file(tensors, str(tmp), metadata={_KEY: json.dumps(meta)})
        log.info("checkpoint %s: epoch %d, batch %d, step %d", path, progress.epoch, progress.batches, progress.step)
    barrier(ctx)


@dataclass
class Loaded:
    """A checkpoint read back: `Progress` (which the run goes on updating) plus the tensors the model and optimiser take.

    Attributes:
        progress_epoch: the epoch it stopped in, the only one whose batches are skipped and whose
            random state is restored.
    """

    progress: Progress
    model: dict
    optim: dict
    meta: dict

    @property
    def progress_epoch(self) -> int:
        return self.meta["epoch"]


def read(path: Path, ctx: Context, *, accumulate: int) -> Loaded | None:
    """The checkpoint at ``path``, or None when there is none yet."""
    if not path.exists():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise ShrinkValueError(f"checkpoint {str(path)!r} is not a shrink checkpoint ({type(exc).__name__}: {exc}); "
                               "delete it or pass another checkpoint= path") from exc
    if meta.get("version") != VERSION:
        raise ShrinkValueError(f"checkpoint {str(path)!r} has format version {meta.get('version')!r}, this shrink "
                               f"reads {VERSION}; delete it or pass another checkpoint= path")
    for what, found, expected in (("processes", meta["world_size"], ctx.world_size),
                                  ("accumulate", meta["accumulate"], accumulate)):
        if found != expected:
            raise ShrinkValueError(
                f"checkpoint {str(path)!r} was written with {what}={found}, this run has {what}={expected}: the "
                f"batches it has seen cannot be skipped exactly. Resume with {what}={found}, or delete the file "
                "to start again.")
    ranks = []
    for r, state in enumerate(meta["ranks"]):
        full = {"loss_sum": state["loss_sum"], "count": state["count"]}
        for when in ("now", "epoch_start"):
            prefix = f"rank{r}/{when}/"
            full[when] = {**state[when], **{k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}}
        ranks.append(full)
    progress = Progress(meta["epoch"], meta["batches"], meta["step"], meta["history"], ranks, meta["scaler"])
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    optim = {k[6:]: v for k, v in tensors.items() if k.startswith("optim/")}
    return Loaded(progress, model, optim, meta)


def load_model(model: nn.Module, loaded: Loaded, path: Path) -> None:
    try:
        model.load_state_dict(loaded.model)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShrinkValueError(
            f"checkpoint {str(path)!r} holds another model's weights ({first}); pass the model it was written "
            "for, or delete the file (or choose another checkpoint= path) to start again") from exc


def load_optimiser(optimiser: torch.optim.Optimizer, wrapped: nn.Module, loaded: Loaded) -> None:
    """Put the saved optimiser state back, sharded like the parameters it belongs to."""
    from .distributed import inner

    named = list(inner(wrapped).named_parameters())
    index = {n: i for i, (n, _) in enumerate(named)}
    state: dict = {}
    for key, value in sorted(loaded.optim.items()):
        name, _, slot = key.rpartition("/")
        param = named[index[name]][1]
        keep_whole = slot == "step" or value.shape != param.shape  # a DTensor's shape is the global one
        state.setdefault(index[name], {})[slot] = value if keep_whole else like(value, param)
    for name, entries in loaded.meta["optim_plain"].items():
        state.setdefault(index[name], {}).update(entries)
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in loaded.meta["param_groups"]]
    optimiser.load_state_dict({"state": state, "param_groups": groups})

