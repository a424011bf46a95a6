"""Running `fit` in several processes: the process group, DDP or FSDP, and each rank's share of the batches.

When is a run distributed (``fit(distributed=...)``):

- ``"auto"`` (the default): when a process group is already initialised with more than one
  process, or when the environment ``torchrun`` sets is there (``WORLD_SIZE`` > 1, ``RANK``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); then `fit` initialises the group itself and
  leaves it for later calls, destroyed when the process exits (a group destroyed and made again
  in the same torchrun job can hang: gloo reads old addresses its store still holds). Anything
  else is a single process, trained exactly as before.
- ``True``: the same, but a run that finds neither is an error instead of a single process.
- ``False``: one process even under torchrun (every rank trains its own copy).

Backend: gloo on CPU, NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``).

How the model is wrapped: `DistributedDataParallel` replicates it and averages the gradients
(the user's module is trained in place; every parameter must take part in each forward, as DDP's
default asks). With ``shard=True`` a copy of the model is sharded with FSDP2
(`torch.distributed.fsdp.fully_shard`): each child of every ``nn.ModuleList`` / ``nn.Sequential``
that holds parameters (a transformer's blocks), innermost first, then the root; at the end the
full weights are gathered back into the user's module on every rank. The copy costs host memory,
not device memory. Rank 0's weights (model and teacher) are the starting point on every rank.

Which batches a rank sees: a `DataLoader` with a `DistributedSampler` is used as it is (and
``set_epoch`` is called each epoch). A `DataLoader` over a map-style dataset with its default
sampler (sequential or shuffled) is rebuilt with a `DistributedSampler` (shuffled ones with seed 0 and
``set_epoch`` each epoch), so rank r reads samples r, r+W, r+2W, ... Any other iterable is
sharded by batch: rank r takes batches r, r+W, r+2W, ... of what it yields, so it must yield the
same batches in the same order on every rank (checked on the first batch of each epoch), and a
last group of fewer than W batches is dropped so that every rank takes the same number of steps.
Either way ``batch_size`` is per rank: the global batch is W x batch_size (x ``accumulate``).

DDP and FSDP average each rank's mean loss, so W processes equal one process with the global
batch when every rank's batch has as many samples (or scored tokens, for a language model); a
short last batch or uneven padding masks weigh their samples a little differently.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ShrinkValueError

log = logging.getLogger(__name__)

_TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Context:
    """Where this process stands in a run.

    Attributes:
        rank, world_size, local_rank: as torch.distributed numbers them (0, 1, 0 for one process).
        device: the device this rank trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _torchrun_world() -> int:
    if not all(k in os.environ for k in _TORCHRUN_ENV):
        return 1
    try:
        return int(os.environ["WORLD_SIZE"])
    except ValueError:
        return 1


def setup(distributed, device: str) -> Context:
    """The run's `Context`; initialises the process group when torchrun's environment asks for one."""
    import torch.distributed as dist

    if distributed not in ("auto", True, False):
        raise ShrinkValueError(f"distributed must be 'auto', True or False; got {distributed!r}")
    if distributed is False or not dist.is_available():
        if distributed is True:
            raise ShrinkValueError("distributed=True, but this torch build has no torch.distributed")
        return Context(device=torch.device(device))
    if not dist.is_initialized():
        if _torchrun_world() <= 1:
            if distributed is True:
                raise ShrinkValueError(
                    "distributed=True, but no process group is initialised and torchrun's environment "
                    f"({', '.join(_TORCHRUN_ENV)}) is not set. Launch with `torchrun --nproc_per_node 2 "
                    "script.py`, or call torch.distributed.init_process_group() first.")
            return Context(device=torch.device(device))
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend)
        atexit.register(_destroy)
    world, rank = dist.get_world_size(), dist.get_rank()
    if world <= 1:
        return Context(device=torch.device(device))
    local = int(os.environ.get("LOCAL_RANK", rank % max(torch.cuda.device_count(), 1)))
    place = torch.device(device)
    if place.type == "cuda" and place.index is None:
        place = torch.device("cuda", local)  # one GPU per rank
    return Context(rank, world, local, place)


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast_module(module: nn.Module, ctx: Context) -> None:
    """Every rank starts from rank 0's weights and buffers (DDP does this itself; FSDP and teachers need it)."""
    if not ctx.distributed:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            moved = t.data.to(_comm_device(ctx))
            dist.broadcast(moved, src=0)
            t.data.copy_(moved)


def _comm_device(ctx: Context) -> torch.device:
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")


def sum_across(values: list[float], ctx: Context) -> list[float]:
    """Element-wise sum over ranks (the epoch's loss total and sample count)."""
    if not ctx.distributed:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, ctx: Context) -> list:
    """One object per rank, on every rank (RNG states for a checkpoint)."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


# --- the model on the ranks --------------------------------------------------------------------

def wrap(model: nn.Module, ctx: Context, *, shard: bool) -> nn.Module:
    """What trains: the model itself (one process), a DDP wrapper around it, or a sharded copy."""
    if not ctx.distributed:
        return model.to(ctx.device)
    if shard:
        return shard_copy(model, ctx)
    from torch.nn.parallel import DistributedDataParallel

    model.to(ctx.device)
    return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def shard_copy(model: nn.Module, ctx: Context) -> nn.Module:
    """A copy of ``model`` sharded over the ranks with FSDP2; ``model`` itself stays whole on the host."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    twin = copy.deepcopy(model)
    broadcast_module(twin, ctx)
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    # Shard the repeated blocks one by one, so that a forward holds one block's full weights at a time.
    # FSDP2 is applied bottom-up: a module sharded before its parent keeps its own parameters.
    for container in [m for m in reversed(list(twin.modules())) if isinstance(m, (nn.ModuleList, nn.Sequential))]:
        for child in container:
            if any(True for _ in child.parameters()) and child is not twin:
                fully_shard(child, mesh=mesh)
    fully_shard(twin, mesh=mesh)
    return twin


def inner(wrapped: nn.Module) -> nn.Module:
    """The module under a DDP wrapper (a sharded copy is its own module)."""
    from torch.nn.parallel import DistributedDataParallel

    return wrapped.module if isinstance(wrapped, DistributedDataParallel) else wrapped


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A shard's full tensor (every rank must call this, in the same order); a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``full`` laid out like ``param``: sharded the same way when ``param`` is a shard."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        return distribute_tensor(full.to(param.device), param.device_mesh, param.placements)
    return full


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict with every shard gathered, on the CPU."""
    return {k: full_tensor(v).detach().cpu() for k, v in module.state_dict().items()}


def gather_back(model: nn.Module, wrapped: nn.Module) -> None:
    """Copy the trained weights of a sharded copy into the user's ``model`` (on every rank)."""
    if wrapped is model or inner(wrapped) is model:
        return
    model.load_state_dict(full_state(wrapped))


def sync_gradients(wrapped: nn.Module, sync: bool):
    """A context in which a DDP backward accumulates locally (``sync=False``) or averages over the ranks.

    FSDP reduce-scatters every micro-batch into its sharded gradients, which adds up the same way.
    """
    from contextlib import nullcontext

    from torch.nn.parallel import DistributedDataParallel

    if isinstance(wrapped, DistributedDataParallel) and not sync:
        return wrapped.no_sync()
    return nullcontext()


def average_gradients(wrapped: nn.Module, ctx: Context) -> None:
    """Average what DDP accumulated under ``no_sync`` (an epoch that ends mid-window) over the ranks by hand."""
    from torch.nn.parallel import DistributedDataParallel

    if not ctx.distributed or not isinstance(wrapped, DistributedDataParallel):
        return
    import torch.distributed as dist

    for p in wrapped.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(ctx.world_size)


# --- the batches on the ranks ------------------------------------------------------------------

class Shards:
    """This rank's batches of ``loader``: a rebuilt DataLoader, or every world_size-th batch."""

    def __init__(self, loader: Iterable, ctx: Context) -> None:
        self.ctx = ctx
        from torch.utils.data import DistributedSampler

        own = isinstance(getattr(loader, "sampler", None), DistributedSampler)  # already gives each rank its share
        self.loader = _with_distributed_sampler(loader, ctx) if ctx.distributed and not own else loader
        self.strided = ctx.distributed and not own and self.loader is loader
        self.dropped = False

    @property
    def source(self) -> Iterable:
        """What is iterated (its RNG and generators are what a checkpoint restores)."""
        return self.loader

    def __len__(self) -> int:
        n = len(self.loader)  # type: ignore[arg-type]
        return n // self.ctx.world_size if self.strided else n

    def epoch(self, epoch: int) -> Iterator:
        """This rank's batches of one epoch (the loader's iterator is made here, before the first batch)."""
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch") and not self.strided:
            sampler.set_epoch(epoch)
        iterator = iter(self.loader)
        return self._every_nth(iterator) if self.strided else iterator

    def _every_nth(self, iterator: Iterator) -> Iterator:
        first = True
        while True:
            group = []
            for _ in range(self.ctx.world_size):
                try:
                    group.append(next(iterator))
                except StopIteration:
                    break
            if len(group) < self.ctx.world_size:
                if group and not self.dropped:
                    self.dropped = True
                    log.warning("train_loader's last %d batch(es) of an epoch are dropped: %d ranks take "
                                "%d batches each step", len(group), self.ctx.world_size, self.ctx.world_size)
                return
            if first:
                _check_same_batches(group[0], self.ctx)
                first = False
            yield group[self.ctx.rank]


def _with_distributed_sampler(loader, ctx: Context):
    """A DataLoader like ``loader`` whose sampler gives this rank its share; ``loader`` when it cannot be."""
    from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset) or loader.batch_size is None:
        return loader
    if type(loader.sampler) not in (RandomSampler, SequentialSampler):
        return loader
    if isinstance(loader.sampler, RandomSampler) and (loader.sampler.replacement or loader.sampler._num_samples):
        return loader
    sampler = DistributedSampler(loader.dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=isinstance(loader.sampler, RandomSampler), seed=0, drop_last=loader.drop_last)
    workers = loader.num_workers
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context if workers else None,
                      generator=loader.generator, prefetch_factor=loader.prefetch_factor if workers else None,
                      persistent_workers=loader.persistent_workers if workers else False)


def _fingerprint(batch) -> float:
    if isinstance(batch, torch.Tensor):
        return float(batch.detach().double().sum()) + batch.numel()
    if isinstance(batch, dict):
        return sum(_fingerprint(v) for _, v in sorted(batch.items(), key=lambda kv: str(kv[0])))
    if isinstance(batch, (tuple, list)):
        return sum((i + 1) * _fingerprint(v) for i, v in enumerate(batch))
    return 0.0


def _check_same_batches(batch, ctx: Context) -> None:
    prints = gather_objects(_fingerprint(batch), ctx)
    if any(abs(p - prints[0]) > 1e-6 * max(1.0, abs(prints[0])) for p in prints):
        raise ShrinkValueError(
            "train_loader yields different batches on different ranks, so taking every "
            f"{ctx.world_size}th batch would not split one stream of batches (first-batch sums {prints}). Seed its "
            "shuffling the same on every rank (DataLoader(..., generator=torch.Generator().manual_seed(0))), or pass "
            "a DataLoader over a map-style dataset, which fit gives each rank its share of with a DistributedSampler.")
