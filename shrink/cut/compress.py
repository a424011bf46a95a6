"""`compress`: trace, rank, cut. The one call a user makes to get a smaller dense model."""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .._util.clone import Spill, clone, emptied
from .._util import checks
from .._util import snapshot
from .._util import inputs as _inputs
from . import calibrate, graph, heal, layout, select
from ..errors import ShrinkTypeError, ShrinkValueError, UnsupportedLayerError
from .._util.hashing import state_hash
from .measure import Measured, Size, count
from .plan import Plan
from . import uniform as uniform_widths
from .experts import expert_steps
from .uniform import equalise
from ..layers import hf_config

log = logging.getLogger(__name__)

SCOPES = ("local", "global")
NORMS = (1, 2)
REINITS = ("trained", "initial", "random")


@dataclass(frozen=True)
class Result:
    """A compressed model and what it took.

    Attributes:
        model: the smaller dense ``nn.Module``.
        plan: the cuts, replayable with `shrink.load`.
        before: parameters and MACs of the original model on the example inputs.
        after: the same for ``model``.
        kept_whole: groups (by root layer or attention block) left uncut, with the reason: a model
            output, ignored, a black box to the tracer, or cutting it broke the model or changed
            what it computes (found and undone by compress itself).
        measured: latency of dense and compressed on the target's runtime (speed targets only).
        importance: how units were ranked: ``{"method": "l1"}``, or for data-aware rankings also
            the calibration cost (``batches``, ``seconds``), the ``loss`` taylor differentiated and
            the layers that could not be measured and ranked by L1 (``by_weight``).
    """

    model: nn.Module
    plan: Plan
    before: Size
    after: Size
    kept_whole: dict[str, str] = field(default_factory=dict)
    measured: Measured | None = None
    importance: dict = field(default_factory=lambda: {"method": "l1"})

    @property
    def params_ratio(self) -> float:
        """before.params / after.params (2.0 means half the parameters)."""
        return self.before.params / max(self.after.params, 1)

    @property
    def macs_ratio(self) -> float:
        """before.macs / after.macs."""
        return self.before.macs / max(self.after.macs, 1)

    def to_dict(self) -> dict:
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "params_ratio": self.params_ratio,
            "macs_ratio": self.macs_ratio,
            "kept_whole": dict(self.kept_whole),
            "plan": self.plan.to_dict(),
            "measured": self.measured.to_dict() if self.measured is not None else None,
            "importance": dict(self.importance),
        }


def check_options(ratio, scope, norm, reinit, round_to) -> None:
    """Raise one clear `ShrinkError` for the first option that is out of range."""
    ratios = ratio.values() if isinstance(ratio, Mapping) else [ratio]
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
            raise ShrinkValueError(
                f"ratio must be a number with 0 <= ratio < 1 (the fraction of channels removed); got {r!r}. "
                "ratio=0.5 removes half of each group's channels."
            )
    if scope not in SCOPES:
        raise ShrinkValueError(f"scope must be one of {SCOPES}; got {scope!r}")
    if isinstance(ratio, Mapping) and scope == "global":
        raise ShrinkValueError("a per-layer ratio dict needs scope='local'; global scope takes one float ratio")
    if norm not in NORMS or isinstance(norm, bool):
        raise ShrinkValueError(f"norm must be 1 (L1) or 2 (L2); got {norm!r}")
    if reinit not in REINITS:
        raise ShrinkValueError(f"reinit must be one of {REINITS}; got {reinit!r}")
    if round_to is not None and round_to != "auto" and (
            isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise ShrinkValueError(f"round_to must be None, 'auto' or a positive int such as 8; got {round_to!r}")


def check_target(ratio, targets: Mapping[str, float | None]) -> dict[str, float]:
    """The one speed target or budget given (or none); it replaces ``ratio``."""
    given = {k: v for k, v in targets.items() if v is not None}
    if len(given) > 1 or (given and ratio is not None):
        named = sorted(given) + (["ratio"] if ratio is not None else [])
        raise ShrinkValueError(f"give one of ratio=, speedup=, latency_ms=, macs=, params=; got {named}. "
                               "A target chooses the ratios itself.")
    for k, v in given.items():
        bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
        if bad or (k in ("macs", "params") and not v <= 1) or (k == "speedup" and not v >= 1):
            expected = {"macs": "0 < macs <= 1 (a fraction of the original MACs)",
                        "params": "0 < params <= 1 (a fraction of the original parameters)",
                        "speedup": "speedup >= 1 (2.0 means twice as fast)",
                        "latency_ms": "latency_ms > 0 (milliseconds per call)"}[k]
            raise ShrinkValueError(f"{k} must be a number with {expected}; got {v!r}")
    return given


def check_initial_state(model: nn.Module, initial_state) -> None:
    """The initial state must have exactly the model's keys and shapes."""
    if not isinstance(initial_state, Mapping):
        raise ShrinkValueError(
            "reinit='initial' needs initial_state=, the model's state_dict from before training "
            "(save it with `copy.deepcopy(model.state_dict())` right after building the model)"
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(initial_state))
    extra = sorted(set(initial_state) - set(expected))
    if missing or extra:
        raise ShrinkValueError(
            f"initial_state does not match the model: missing keys {missing}, unexpected keys {extra}. "
            "Pass the state_dict of this same architecture taken before training."
        )
    not_tensors = sorted(k for k in expected if not isinstance(initial_state[k], torch.Tensor))
    if not_tensors:
        k = not_tensors[0]
        raise ShrinkTypeError(
            f"initial_state must map names to tensors; {not_tensors} are not (e.g. {k!r} is "
            f"{type(initial_state[k]).__name__}). Pass `model.state_dict()` taken before training, not numbers."
        )
    wrong = sorted(k for k in expected if tuple(initial_state[k].shape) != tuple(expected[k].shape))
    if wrong:
        k = wrong[0]
        raise ShrinkValueError(
            f"initial_state has other shapes than the model for {wrong}: e.g. {k!r} is "
            f"{tuple(initial_state[k].shape)} where the model has {tuple(expected[k].shape)}. It comes from "
            "another configuration: pass the state_dict of this same architecture, taken right after building it."
        )


@snapshot.undo_on_failure(values=lambda kw: kw.get("reinit", "trained") != "trained")
def compress(
    model: nn.Module,
    example_inputs,
    *,
    ratio: float | Mapping[str, float] | None = None,
    speedup: float | None = None,
    latency_ms: float | None = None,
    runtime: str = "onnxruntime",
    device: str = "cpu",
    batch_size: int = 1,
    macs: float | None = None,
    params: float | None = None,
    scope: str = "local",
    norm: int = 1,
    importance: str | None = None,
    calibration: Iterable | None = None,
    reinit: str = "trained",
    initial_state: Mapping[str, torch.Tensor] | None = None,
    ignore: Iterable = (),
    round_to: int | str | None = None,
    strict: bool = False,
    inplace: bool = False,
    seed: int = 0,
    trace_timeout: float | None = 180.0,
    uniform: bool | None = None,
) -> Result:
    """Physically remove the least important units of ``model`` (lowest L1 norm by default), keeping its outputs' shapes.

    Args:
        model: the trained model.
        example_inputs: a tensor, tuple of tensors, or dict of keyword tensors the model runs on.
        ratio: fraction of each group's channels removed (0 <= ratio < 1), or {layer name: ratio};
            0.5 when no target is given.
        speedup, latency_ms: a speed target measured on ``runtime`` ("onnxruntime", "torch",
            "torch-fp16"), ``device`` ("cpu", "cuda") at ``batch_size``: widths are chosen from
            measured latency tables, and the cut model is timed against the dense one until the
            target is met (see `Result.measured`), else a `ShrinkError` says how far it got.
        macs, params: a budget instead: at most this fraction of the original MACs / parameters,
            as `shrink.count` counts them.
        scope: "local" (each group loses ``ratio``) or "global" (one threshold across groups).
        norm: 1 for the L1 norm of each unit's weights, 2 for L2 (the same as importance="l1"/"l2").
        importance: how units are ranked (formulas and sources in ``shrink/cut/importance.py``):

            - ``"l1"`` (default) / ``"l2"``: the Lp norm of the unit's producing weight rows,
              summed over coupled layers (Li et al. 2017). No data.
            - ``"activation"``: the mean |output| of each producing layer's channel over the
              calibration batches, summed over coupled layers; a head's score is its attention
              output (the output projection's input), Minitron (Sreenivas et al. 2024). Runs
              under ``torch.inference_mode``.
            - ``"taylor"``: ``sum |w * dL/dw|`` over the unit's producing rows, gradients
              accumulated over the calibration batches (Molchanov et al. 2019; torch-pruning's
              ``TaylorImportance``). ``L`` is the model's own loss when it returns one, else the
              cross-entropy of its logits against the batch's labels (next-token for sequences),
              against the input ids (language models), or against the logits' own argmax.
        calibration: the batches data-aware importance runs (required for them, refused for
            "l1"/"l2"): a list or DataLoader of what the model takes (a tensor, a tuple of
            tensors, a dict of keyword tensors), optionally with labels as ``(inputs, labels)``.
            Every batch is used; 8-32 are typical. The cost is in ``Result.importance``.
        reinit: "trained" keeps trained values; "initial" takes them from ``initial_state``;
            "random" re-initialises every layer, seeded by ``seed``.
        initial_state: the state_dict from before training (needed for reinit="initial").
        ignore: modules or qualified names kept whole.
        round_to: keep widths multiples of this (attention is always cut by whole heads), or
            "auto": round each group up to a width measured fast on ``runtime``/``device``.
        strict: by default a group whose cut breaks the model, or makes it compute something else
            than the original with the cut units masked, is kept whole and reported in
            ``kept_whole``; ``strict=True`` raises instead, naming the layers to ignore.
        inplace: cut ``model`` itself; by default it is left untouched, which costs one copy of the
            model in memory. With ``inplace=True`` no copy is made: the model as it was is written
            to a temporary file (``TMPDIR``) to retry from if the first cut fails its checks, and
            each cut-away weight leaves memory as soon as its narrower copy replaces it, so compress
            peaks at little more than the model's own bytes (benchmarks/results/scale.md). A
            parameter object the cut replaced then reads its old values from that file.
        seed: seed of reinit="random".
        trace_timeout: seconds tracing may take beyond four plain forward passes (None: no limit);
            parts that run past it are traced as black boxes, and a clear error says when even
            that does not finish.
        uniform: every layer of a kind keeps the same count of heads / FFN units / hidden width
            (each layer still ranks its own); None means True for a Hugging Face model, whose
            config can only describe uniform widths, and False otherwise.

    Returns:
        A `Result` with the smaller model, its plan and sizes before and after.

    Raises:
        ShrinkError: bad options, inputs the model cannot run, a layer that cannot be cut.

    Example:
        >>> import torch, shrink
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> result = shrink.compress(net, torch.randn(1, 8), ratio=0.5)
        >>> result.model[0].out_features
        8
        >>> batches = [torch.randn(32, 8) for _ in range(4)]
        >>> result = shrink.compress(net, torch.randn(1, 8), ratio=0.5, importance="taylor", calibration=batches)
        >>> result.importance["batches"]
        4
    """
    model = checks.uncompiled(model)
    target = check_target(ratio, {"speedup": speedup, "latency_ms": latency_ms, "macs": macs, "params": params})
    ratio = 0.5 if ratio is None and not target else ratio
    importance, norm = calibrate.check(importance, norm, calibration)
    check_options(ratio if ratio is not None else 0.5, scope, norm, reinit, round_to)
    if not isinstance(model, nn.Module):
        raise ShrinkTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    checks.eager(model)
    if reinit == "initial":
        check_initial_state(model, initial_state)
    checks.ignore_list(ignore)
    checks.finite_parameters(model)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ShrinkTypeError(f"seed must be an int; got {type(seed).__name__} {seed!r}")
    if target or round_to == "auto":
        # target/ sits above cut/ (it measures on deploy/'s runtimes): imported only when asked for.
        from ..target.solve import compress_to_target

        return compress_to_target(model, example_inputs, target=target, ratio=ratio, runtime=runtime, device=device,
                                  batch_size=batch_size, scope=scope, norm=norm, importance=importance,
                                  calibration=calibration, reinit=reinit,
                                  initial_state=initial_state, ignore=ignore, round_to=round_to, inplace=inplace,
                                  seed=seed, strict=strict, trace_timeout=trace_timeout, uniform=uniform)
    source_sha256 = state_hash(model.state_dict())
    # The model as it was, to retry from if the first cut fails its checks: the caller's untouched
    # model, or with inplace=True the same spilled to disk (no second copy in memory).
    with contextlib.ExitStack() as stack:
        pristine, release = _spill(model, stack) if inplace else ((lambda: clone(model)), emptied)
        return _compress(model, model if inplace else clone(model), pristine, release, example_inputs, ratio=ratio,
                         scope=scope, norm=norm, importance=importance, calibration=calibration, reinit=reinit,
                         initial_state=initial_state, ignore=ignore, round_to=round_to, inplace=inplace, seed=seed,
                         strict=strict, trace_timeout=trace_timeout, uniform=uniform, source_sha256=source_sha256)


def _spill(model: nn.Module, stack: contextlib.ExitStack):
    """(``fresh()`` copies of ``model`` as it is now, what becomes of a parameter the cut replaced):
    read back from a temporary file, or where spilling fails, from a copy in memory."""
    try:
        spill = Spill(model)
    except (OSError, TypeError, RuntimeError, pickle.PicklingError) as exc:
        log.warning("keeping a copy of the model in memory to retry from (spilling it to disk failed: %s)", exc)
        backup = clone(model)
        return (lambda: clone(backup)), None  # the replaced parameters keep their values: an undo needs them
    stack.callback(spill.close)
    return spill.fresh, spill.put_back


def _compress(model, work, pristine, release, example_inputs, *, ratio, scope, norm, importance, calibration, reinit,
              initial_state, ignore, round_to, inplace, seed, strict, trace_timeout, uniform, source_sha256) -> Result:
    layout_before = layout.record(work)  # on the copy that is cut: objects it holds are compared by identity
    started = time.perf_counter()
    before, outputs = count(work, example_inputs, return_outputs=True)
    # The budget is for the tracer's walks: a forward pass that is slow by itself (an 8B model on two
    # CPU cores) is added to it, once for each of the few forwards a trace runs.
    if trace_timeout is not None:
        trace_timeout += 4 * (time.perf_counter() - started)
    shapes = {k: v.shape for k, v in _inputs.task_outputs(_inputs.flatten_outputs(outputs)).items()}
    if isinstance(ratio, Mapping):
        _check_ratio_names(work, ratio)
    traced = graph.trace(work, example_inputs, ignore=ignore, outputs=outputs, timeout=trace_timeout)
    # Step 1: rank every group (on the trained weights, or on calibration data through stand-in
    # weights: calibrate.py) and choose what goes.
    ranking = calibrate.prepare(traced, example_inputs, importance, calibration)
    unranked: dict[str, str] = {}
    with ranking.applied(work) if ranking is not None else contextlib.nullcontext():
        steps = select.width_steps(traced, ratio=ratio, scope=scope, p=norm, round_to=round_to, unranked=unranked)
        steps += select.head_steps(traced, ratio=ratio, scope=scope, p=norm)
        steps += expert_steps(work, ratio=ratio, p=norm, ignore=ignore)  # mixture-of-experts FFNs (layers/hf_moe.py)
        uniform = hf_config.is_hf(model) if uniform is None else bool(uniform)
        kept_uniform: dict[str, str] = {}
        if uniform:
            steps = equalise(traced, steps, p=norm, why=kept_uniform)
            kinds = uniform_widths.kinds_of(traced)  # before the cut narrows the layers
    kept_whole = {**traced.kept_groups(), **unranked, **kept_uniform}

    # Step 2: the values the kept units take (lottery-ticket rewind loads them before cutting).
    def fresh() -> nn.Module:
        again = pristine()
        if reinit == "initial":
            again.load_state_dict(initial_state)
        return again

    if reinit == "initial":
        work.load_state_dict(initial_state)
    # Step 3: cut, check the cut equals masking, and keep whole what breaks (heal.py).
    outcome = heal.heal(traced, steps, example_inputs, shapes, fresh, ignore=ignore, timeout=trace_timeout,
                        strict=strict, release=release)
    if strict and outcome.broken:
        raise _strict_error(outcome.broken)
    # A kind kept whole in one layer stays whole in all, and what the config could not describe is kept
    # whole too (uniform.py).
    if uniform and (outcome.broken or hf_config.is_hf(work) and hf_config.check(outcome.model)):
        outcome = uniform_widths.keep_kinds_whole(
            outcome, kinds, lambda rest: heal.heal(graph.trace(fresh(), example_inputs, ignore=ignore,
                                                               timeout=trace_timeout),
                                                   rest, example_inputs, shapes, fresh, ignore=ignore,
                                                   timeout=trace_timeout, strict=False, release=release),
            model_is_hf=hf_config.is_hf(work))
    kept_whole.update(outcome.broken)
    work, steps, tracker = outcome.model, outcome.steps, outcome.tracker
    # A layer the trace kept out of its groups but a cut narrowed after all (DeepSeek's shared experts,
    # cut with the routed experts) is not whole.
    kept_whole = {k: v for k, v in kept_whole.items() if not (v == "ignored" and k in tracker.kept)}
    if inplace and work is not model:  # healing rebuilt the model: the caller's object gets its state
        _become(model, work)
        work = model
    if reinit == "random":
        reinitialise(work, seed)
    after = check_outputs(work, example_inputs, shapes)
    if not steps and _asked_for_cuts(ratio):
        _say_nothing_removed(traced, kept_whole)
    plan = Plan(
        steps=tuple(steps),
        kept=dict(sorted(tracker.kept.items())),
        widths=tracker.widths(),
        inputs=_inputs.to_spec(example_inputs),
        settings={
            "ratio": dict(ratio) if isinstance(ratio, Mapping) else ratio,
            "scope": scope, "norm": norm, "importance": importance, "reinit": reinit, "round_to": round_to,
            "ignore": graph.ignore_names(work, ignore),
            "seed": seed,
            "uniform": uniform,
        },
        source_sha256=source_sha256,
        kept_whole=dict(sorted(kept_whole.items())),
        checks={"exact": sorted(outcome.exact), "shape_only": sorted(outcome.shape_only),
                "black_boxes": dict(sorted(traced.opaque.items())), "trials": outcome.trials},
        layout=layout.describe(layout_before, work),
    )
    log.info("compressed %d -> %d params in %d cuts", before.params, after.params, len(steps))
    return Result(model=work, plan=plan, before=before, after=after, kept_whole=dict(sorted(kept_whole.items())),
                  importance=ranking.to_dict() if ranking is not None else {"method": importance})


def _asked_for_cuts(ratio) -> bool:
    return any(r > 0 for r in (ratio.values() if isinstance(ratio, Mapping) else [ratio]))


def _say_nothing_removed(traced: graph.Traced, kept_whole: dict[str, str]) -> None:
    """Never silent: a compress that removes nothing says why."""
    if not traced.groups and not traced.blocks:
        why = "the tracer found no group of channels to cut (no Linear/conv/embedding layer it can narrow)"
    else:
        shown = "; ".join(f"{k!r}: {v}" for k, v in list(kept_whole.items())[:5])
        more = f" (+{len(kept_whole) - 5} more)" if len(kept_whole) > 5 else ""
        why = f"every group was kept whole: {shown}{more}"
    message = f"compress removed nothing: {why}. shrink.analyze(model, inputs) lists every group and reason."
    log.warning(message)
    warnings.warn(message, stacklevel=4)


def _strict_error(broken: dict[str, str]) -> UnsupportedLayerError:
    names = sorted(broken)
    first = names[0]
    return UnsupportedLayerError(
        f"cutting {len(names)} group(s) breaks the model (strict=True): {first!r}: {broken[first]}. "
        f"Keep them whole with ignore={names!r}, or drop strict=True to let compress keep them whole itself.",
        layers=names)


def _become(target: nn.Module, source: nn.Module) -> None:
    """Make ``target`` (the caller's object, inplace=True) the model ``source`` is."""
    target.__dict__.update(source.__dict__)


def _check_ratio_names(model: nn.Module, ratio: Mapping[str, float]) -> None:
    names = {n for n, _ in model.named_modules()}
    unknown = sorted(set(ratio) - names)
    if unknown:
        raise ShrinkValueError(f"ratio names layers the model does not have: {unknown}. Use qualified names "
                               "from `model.named_modules()` or `shrink.analyze(...)`.")


def reinitialise(model: nn.Module, seed: int) -> None:
    """Fresh, seeded initialisation of every layer that knows how to reset itself."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
                module.reset_parameters()


def check_outputs(model: nn.Module, example_inputs, expected: Mapping[str, torch.Size]) -> Size:
    """Count the cut model's size on one forward pass; every output must still have its shape.

    heal.py has already run and checked the cut (and named any layer that broke); this is the
    last look after re-initialisation, on the same forward pass that counts the size.
    """
    size, out = count(model, example_inputs, return_outputs=True)
    got = {k: v.shape for k, v in _inputs.task_outputs(_inputs.flatten_outputs(out)).items()}
    changed = sorted(k for k in expected if got.get(k) != expected[k])
    if changed:
        k = changed[0]
        raise ShrinkValueError(
            f"cutting changed the shape of output(s) {changed}: {k!r} was {tuple(expected[k])}, now "
            f"{tuple(got[k]) if k in got else 'missing'}. Keep the layer producing it whole with ignore=."
        )
    return size
