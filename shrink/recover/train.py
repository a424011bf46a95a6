"""Recovering accuracy after a cut: a plain training loop, optional distillation, and evaluation."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from .._util import checks
from .._util.progress import progress_bar
from ..errors import ShrinkValueError
from . import checkpoint as _ckpt
from . import distributed as _ranks
from . import objectives
from .evaluate import evaluate  # evaluate.py; fit reports val_accuracy with it, older imports find it here

log = logging.getLogger(__name__)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, *, batches: int | None = None, device: str = "cpu") -> int:
    """Recompute every BatchNorm's running statistics on data, without a gradient step.

    Cutting channels changes what each BatchNorm sees downstream; its stored mean and variance
    then describe a model that no longer exists. This resets them and averages over ``batches``
    batches of ``loader`` (all, by default), with equal weight per batch.

    Returns:
        How many BatchNorm layers were recalibrated (0 leaves the model untouched).
    """
    checks.module(model)
    if batches is not None:
        checks.number(batches, name="batches", low=1, integer=True, example=" batches=None uses every batch.")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.to(device).train()
    seen = 0
    try:
        for i, batch in enumerate(loader):
            if batches is not None and i >= batches:
                break
            x, _ = _pair(batch, "the loader")
            model(x.to(device))
            seen += 1
        if seen == 0:
            raise ShrinkValueError("recalibrate_bn got no batches from the loader; pass a loader of (inputs, labels)")
    except BaseException:  # never leave reset statistics behind
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
        raise
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)


def _pair(batch, where: str):
    """A batch must be ``(inputs, labels)``: say so instead of failing inside the model."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch
    raise ShrinkValueError(
        f"{where} must yield (inputs, labels) pairs of tensors, like a DataLoader over a TensorDataset(x, y); "
        f"got a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    )


def distillation_loss(student_logits, teacher_logits, labels, *, temperature: float, alpha: float):
    """Hinton et al. 2015: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy."""
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean") * temperature**2
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def fit(
    model: nn.Module,
    train_loader: Iterable,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    alpha: float = 0.7,
    val_loader: Iterable | None = None,
    device: str = "cpu",
    progress: bool = True,
    task: str = "classify",
    accumulate: int = 1,
    precision: str | None = None,
    distributed: bool | str = "auto",
    shard: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
) -> list[dict]:
    """Train ``model`` with Adam; with a ``teacher``, distil its softened outputs into ``model``.

    The same call runs in one process or in several under ``torchrun`` (recover/distributed.py
    says when and how: DDP, or FSDP with ``shard=True``; each rank reads its share of the batches).

    Args:
        model: the model to train (trained in place, also when sharded).
        train_loader: batches of ``(inputs, labels)``; with ``task="lm"``, token ids (objectives.py).
            Under torchrun its batch size is per process.
        epochs, lr, weight_decay: the optimiser's schedule (Adam, constant rate).
        teacher: the un-pruned model to distil from (kept frozen, in eval mode).
        temperature, alpha: distillation temperature and the weight of the soft loss.
        val_loader: evaluated after each epoch when given (accuracy; a language model's
            next-token loss and perplexity).
        device: where to train ("cuda" puts each rank on ``cuda:LOCAL_RANK``).
        progress: show a progress bar (on rank 0).
        task: "classify" (cross-entropy on labels) or "lm" (a causal language model: cross-entropy
            on the next token; distillation compares the token distributions at every position).
        accumulate: add up the gradients of this many batches before each optimiser step (each
            batch's loss is divided by it, so N batches of B equal one batch of N x B).
        precision: None (float32), "bf16" (autocast; CPU or a CUDA device that has it) or "fp16"
            (autocast and a GradScaler; CUDA only).
        distributed: "auto" (under torchrun or an initialised process group), True (require it) or
            False (one process regardless).
        shard: shard the model (and teacher) over the processes with FSDP instead of replicating it.
        checkpoint: a file to resume from and to write to (atomically) after every epoch; a rerun
            with the same path continues where the last one stopped and reaches the same weights.
        checkpoint_every: also write it every this many optimiser steps.

    Returns:
        One dict per epoch: ``{"epoch", "loss", "val_accuracy"}`` (``"val_loss"``,
        ``"val_perplexity"`` for ``task="lm"``); the loss is averaged over every process.

    Raises:
        ShrinkValueError: a bad option, an empty loader, or a checkpoint of another run.

    Example:
        >>> import torch, shrink
        >>> model = torch.nn.Linear(4, 2)
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(4)]
        >>> history = shrink.fit(model, data, epochs=2, accumulate=2, progress=False)
        >>> len(history)
        2
    """
    checks.module(model)
    if teacher is not None:
        checks.module(teacher, what="teacher")
    ok = (isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 0
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lr, alpha, temperature, weight_decay)))
    # Written as "not (x > 0)" so that NaN fails too.
    if not ok or not (lr > 0) or not (0 <= alpha <= 1) or not (temperature > 0) or not (weight_decay >= 0) or lr == float("inf"):
        raise ShrinkValueError(
            "fit needs an int epochs >= 0, a finite lr > 0, 0 <= alpha <= 1, temperature > 0 and weight_decay >= 0; "
            f"got epochs={epochs!r}, lr={lr!r}, alpha={alpha!r}, temperature={temperature!r}, weight_decay={weight_decay!r}"
        )
    _check_options(task, accumulate, precision, shard, checkpoint_every, device)
    path = _ckpt.check_path(checkpoint)
    ctx = _ranks.setup(distributed, device)
    if shard and not ctx.distributed:
        raise ShrinkValueError("shard=True splits the model over several processes, but this is one process; "
                               "launch with `torchrun --nproc_per_node 2 script.py`, or pass shard=False")
    return _train(model, train_loader, ctx, path, epochs=epochs, lr=lr, weight_decay=weight_decay, teacher=teacher,
                  temperature=temperature, alpha=alpha, val_loader=val_loader, progress=progress, task=task,
                  accumulate=accumulate, precision=precision, shard=shard, checkpoint_every=checkpoint_every,
                  device=device if not ctx.distributed else ctx.device)


def _check_options(task, accumulate, precision, shard, checkpoint_every, device) -> None:
    """The options fit added for scale-out, refused before anything changes."""
    if task not in objectives.TASKS:
        raise ShrinkValueError(f"task must be 'classify' (labels) or 'lm' (next-token ids); got {task!r}")
    checks.number(accumulate, name="accumulate", low=1, integer=True, example=" accumulate=1 steps after every batch.")
    if checkpoint_every is not None:
        checks.number(checkpoint_every, name="checkpoint_every", low=1, integer=True,
                      example=" checkpoint_every=None writes the checkpoint after each epoch only.")
    if not isinstance(shard, bool):
        raise ShrinkValueError(f"shard must be True or False; got {shard!r}")
    if precision not in (None, "bf16", "fp16"):
        raise ShrinkValueError(f"precision must be None, 'bf16' or 'fp16'; got {precision!r}")
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise ShrinkValueError(f"precision='fp16' needs a CUDA device (device={device!r}); on a CPU pass "
                               "precision='bf16' or None")
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ShrinkValueError(f"precision='bf16': this GPU ({torch.cuda.get_device_name()}) has no bfloat16; "
                               "pass precision='fp16'")


def _train(model, train_loader, ctx, path, *, epochs, lr, weight_decay, teacher, temperature, alpha, val_loader,
           progress, task, accumulate, precision, shard, checkpoint_every, device) -> list[dict]:
    # Step 1: what the checkpoint says (its weights go into the model before it is replicated or sharded).
    loaded = _ckpt.read(path, ctx, accumulate=accumulate) if path is not None else None
    state = loaded.progress if loaded is not None else _ckpt.Progress()
    if loaded is not None:
        _ckpt.load_model(model, loaded, path)
        log.info("resuming from %s: epoch %d, batch %d, step %d", path, state.epoch, state.batches, state.step)
    # Step 2: the model and teacher on this rank.
    model.train()
    wrapped = _ranks.wrap(model, ctx, shard=shard)  # one process or DDP: moved to device; sharded: a copy is
    wrapped.train()
    teach = None
    if teacher is not None:
        if shard:
            teach = _ranks.shard_copy(teacher, ctx)
        else:
            teach = teacher.to(device)
            _ranks.broadcast_module(teach, ctx)
        teach.eval()
    optimiser = torch.optim.Adam(wrapped.parameters(), lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    if loaded is not None:
        _ckpt.load_optimiser(optimiser, wrapped, loaded)
        for group in optimiser.param_groups:  # this call's schedule, not the one the checkpoint was written with
            group["lr"], group["weight_decay"] = lr, weight_decay
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
    autocast = (lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if precision == "bf16"
                                       else torch.float16)) if precision else nullcontext
    shards = _ranks.Shards(train_loader, ctx)
    history = state.history
    steps = epochs * len(shards) if hasattr(train_loader, "__len__") else None

    def save(epoch_start, total, n):
        state.scaler = scaler.state_dict() if scaler is not None else None
        _ckpt.save(path, wrapped, optimiser, state, {"now": _ckpt.capture_rng(shards.source), "epoch_start": epoch_start,
                                                     "loss_sum": total, "count": n}, ctx, accumulate=accumulate)

    with progress_bar(progress and ctx.main, steps, "fine-tuning" if teacher is None else "distilling") as advance:
        for epoch in range(state.epoch, epochs):
            # Step 3: this epoch's batches; a resumed epoch replays the shuffle and skips what was seen.
            mine = state.ranks[ctx.rank] if loaded is not None and epoch == loaded.progress_epoch else None
            if mine is not None:
                _ckpt.restore_rng(mine["epoch_start"], shards.source)
            epoch_start = _ckpt.capture_rng(shards.source) if path is not None else None
            batches = shards.epoch(epoch)
            total, n, done = (mine["loss_sum"], mine["count"], state.batches) if mine is not None else (0.0, 0, 0)
            if mine is not None and done:
                for _ in range(done):
                    next(batches, None)
                _ckpt.restore_rng(mine["now"], shards.source)
            pending = 0
            for raw in batches:
                batch = objectives.split(raw, task, "train_loader").to(device)
                pending += 1
                window_ends = pending == accumulate
                # Step 4: forward, backward; DDP averages the gradients only on a window's last batch.
                with _ranks.sync_gradients(wrapped, window_ends):
                    with autocast():
                        logits = objectives.logits(wrapped, batch)
                        if teach is None:
                            loss = objectives.loss(logits, batch)
                        else:
                            with torch.no_grad():
                                target = objectives.logits(teach, batch)
                            loss = objectives.loss(logits, batch, teacher=target, temperature=temperature, alpha=alpha)
                    if pending == 1:
                        optimiser.zero_grad(set_to_none=True)
                    scaled = loss / accumulate if accumulate > 1 else loss
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                if window_ends:
                    _step(optimiser, scaler)
                    pending, state.step = 0, state.step + 1
                total, n, done = total + loss.item() * batch.count, n + batch.count, done + 1
                advance()
                if window_ends and path is not None and checkpoint_every and state.step % checkpoint_every == 0:
                    state.batches = done
                    save(epoch_start, total, n)
            if pending:  # the epoch ended mid-window: step on what it has, weighted as a full window
                _ranks.average_gradients(wrapped, ctx)
                for p in wrapped.parameters():
                    if p.grad is not None:
                        p.grad.mul_(accumulate / pending)
                _step(optimiser, scaler)
                state.step += 1
            # Step 5: the epoch's record, averaged over every rank.
            total, n = _ranks.sum_across([total, n], ctx)
            if n == 0:
                raise ShrinkValueError("train_loader yielded no batches; pass a loader of (inputs, labels) batches")
            record = {"epoch": epoch + 1, "loss": total / n}
            if val_loader is not None:
                judged = _ranks.inner(wrapped)
                if task == "lm":
                    record["val_loss"] = objectives.lm_loss(judged, val_loader, device=device)
                    record["val_perplexity"] = math.exp(min(record["val_loss"], 700.0))
                else:
                    record["val_accuracy"] = evaluate(judged, val_loader, device=device)
                wrapped.train()
            log.info("epoch %d: %s", epoch + 1, record)
            history.append(record)
            state.epoch, state.batches = epoch + 1, 0
            if path is not None:
                save(_ckpt.capture_rng(shards.source), 0.0, 0)
    _ranks.gather_back(model, wrapped)
    model.eval()
    return history


def _step(optimiser, scaler) -> None:
    if scaler is None:
        optimiser.step()
        return
    scaler.step(optimiser)
    scaler.update()
