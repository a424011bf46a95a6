"""Self-healing cuts: find the planned cuts that break the model, keep those groups whole, cut the rest.

A trial cuts a set of steps from a pristine model and checks the result (verify.py): it runs,
keeps every output's shape, and equals the masked original wherever that check is exact. The
first trial cuts everything on the model compress already traced, so a model that is cut
cleanly costs one extra forward pass. When it fails, a bisection over the steps finds the ones
responsible (about 2·k·log2(n) trials for k bad steps of n), each on a fresh copy, traced afresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .._util import inputs as _inputs
from . import graph, opaque, verify
from .plan import Step
from .surgery import Tracker, apply_steps
from .verify import Mismatch

log = logging.getLogger(__name__)

MAX_TRIALS = 64


@dataclass
class Outcome:
    """A cut model that passed its checks, and what was learned on the way (internal)."""

    model: nn.Module
    traced: graph.Traced
    steps: list[Step]
    tracker: Tracker
    broken: dict[str, str] = field(default_factory=dict)  # step label -> why it is kept whole
    exact: list[str] = field(default_factory=list)
    shape_only: list[str] = field(default_factory=list)
    trials: int = 1


def label(step: Step) -> str:
    return step.layer


def trial(traced: graph.Traced, steps: list[Step], example_inputs, shapes,
          release=None) -> tuple[Tracker, list[Step], Mismatch | None]:
    """Cut ``steps`` from ``traced.model`` in place and check it; returns (tracker, steps as applied, failure).

    ``release``: what becomes of each parameter a cut replaces (surgery.Replaced).

    The steps are applied checked-for-shape-only first, then exactly checked (``traced.exact`` lists
    the latter by label).
    """
    model, tracker = traced.model, Tracker()
    loose = [s for s in steps if not s.kind.exact(traced, s)]
    checked = [s for s in steps if s.kind.exact(traced, s)]
    traced.checked = {label(s): (s in checked) for s in steps}
    order = loose + checked
    # Step 1: the cuts that cannot be checked exactly are made on both sides of the comparison.
    failure = _guard(lambda: apply_steps(model, traced.dg, traced.blocks, loose, tracker, traced.seen, release), "cutting")
    if failure:
        return tracker, order, failure
    # Step 2: the reference, with the checked cuts masked; step 3: cut them and compare.
    expected = None
    if checked:
        try:
            readouts = verify.readouts(traced, checked)
        except Exception as exc:  # noqa: BLE001 - the tracer cannot map these channels to their readers
            return tracker, order, Mismatch(f"mapping the cut to its readers failed: {_cause(exc)}")
        with verify.zeroed_readouts(readouts):
            expected, failure = run_named(model, example_inputs)
        if failure:  # the loose cuts broke the forward pass
            return tracker, order, failure
    failure = _guard(lambda: apply_steps(model, traced.dg, traced.blocks, checked, tracker, traced.seen,
                                                  release), "cutting")
    if failure:
        return tracker, order, failure
    got, failure = run_named(model, example_inputs)
    if failure:
        return tracker, order, failure
    changed = sorted(k for k in shapes if k not in got or got[k].shape != shapes[k])
    if changed:
        k = changed[0]
        return tracker, order, Mismatch(f"output {k!r} changed shape from {tuple(shapes[k])} to "
                                         f"{tuple(got[k].shape) if k in got else 'missing'}")
    if expected is not None:
        return tracker, order, verify.compare(expected, got, verify.tolerance(model))
    return tracker, order, None


def _guard(fn: Callable[[], object], what: str) -> Mismatch | None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any failure while cutting is a reason to keep the group whole
        return Mismatch(f"{what} failed: {type(exc).__name__}: {opaque.short(exc)}")
    return None


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {opaque.short(cause)}"


def run_named(model: nn.Module, example_inputs) -> tuple[dict[str, torch.Tensor], Mismatch | None]:
    """Run the cut model once; a failure names the innermost layer that was running."""
    stack: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def enter(module, _args):
        stack.append(names.get(module, "?"))

    def leave(_module, _args, _out):
        if stack:
            stack.pop()

    handles = [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        with torch.no_grad():
            out = _inputs.run(model, example_inputs)
    except Exception as exc:  # noqa: BLE001
        layer = stack[-1] if stack else ""
        where = f" in layer {layer!r}" if layer else " in the model's own forward"
        return {}, Mismatch(f"the cut model fails{where}: {_cause(exc)}", layer)
    finally:
        for h in handles:
            h.remove()
    return {k: v.detach().clone() for k, v in _inputs.task_outputs(_inputs.flatten_outputs(out)).items()}, None


def heal(first: graph.Traced, steps: list[Step], example_inputs, shapes, fresh: Callable[[], nn.Module], *,
         ignore, timeout: float | None, strict: bool, release=None) -> Outcome:
    """Cut ``steps``, keeping whole the groups whose cut breaks the model. See the module docstring."""
    tracker, order, failure = trial(first, steps, example_inputs, shapes, release)
    if failure is None:
        return _outcome(first, order, tracker, {})
    log.info("the full cut failed (%s); looking for the groups responsible", failure.reason)
    trials = {"n": 1}
    reasons: dict[str, str] = {}
    started = time.monotonic()
    best: list = []  # the passing trial that cut the most steps: what is returned if the trials run out

    def attempt(subset: list[Step]):
        trials["n"] += 1
        traced = graph.trace(fresh(), example_inputs, ignore=ignore, timeout=timeout, black_boxes=first.opaque)
        tracker, order, failure = trial(traced, subset, example_inputs, shapes, release)
        if failure is None and subset and (not best or len(subset) > len(best[3])):
            best[:] = [traced, tracker, order, list(subset)]
        return traced, tracker, order, failure

    def ok(subset: list[Step]) -> bool:
        if trials["n"] >= MAX_TRIALS:
            return False
        return attempt(subset)[3] is None

    def find_bad(good: list[Step], cand: list[Step]) -> list[Step]:
        if len(cand) == 1:
            if trials["n"] < MAX_TRIALS:
                failure = attempt(good + cand)[3]
                reasons[label(cand[0])] = failure.reason if failure else "its cut failed together with others"
            else:
                reasons[label(cand[0])] = "not verified: the search for failing groups ran out of trials"
            return cand
        half = len(cand) // 2
        a, b = cand[:half], cand[half:]
        if ok(good + a):
            return find_bad(good + a, b)
        bad_a = find_bad(good, a)
        good_a = [s for s in a if s not in bad_a]
        if ok(good + good_a + b):
            return bad_a
        return bad_a + find_bad(good + good_a, b)

    touched = _touched(first, steps)
    remaining = list(steps)
    while failure is not None:
        # Step 1: a failure that names a layer points at the cuts that touch it (one trial per cause);
        # step 2: otherwise, bisection over what is left.
        suspects = _suspects(failure.layer, remaining, touched)
        if suspects and len(suspects) < len(remaining):
            for s in suspects:
                reasons[label(s)] = failure.reason
            bad = suspects
        else:
            bad = find_bad([], remaining) if len(remaining) > 1 else list(remaining)
            if len(remaining) == 1:
                reasons.setdefault(label(remaining[0]), failure.reason)
        remaining = [s for s in remaining if s not in bad]
        if strict:
            return _outcome(first, [], Tracker(), reasons, trials["n"])
        if not remaining or trials["n"] >= MAX_TRIALS:
            break
        traced, tracker, order, failure = attempt(remaining)
        if failure is None:
            log.info("healed in %d trials (%.1f s): %d groups kept whole", trials["n"],
                     time.monotonic() - started, len(reasons))
            return _outcome(traced, order, tracker, reasons, trials["n"])
    # The trials ran out: the largest combination that passed (each of its cuts is checked), else the
    # uncut model; every other planned step is kept whole.
    kept = best[3] if best else []
    for s in steps:
        if s in kept:
            reasons.pop(label(s), None)
        else:
            reasons.setdefault(label(s), "not cut: no passing combination with it was found within the trials allowed")
    if best:
        log.info("healing ran out of trials; keeping the largest passing cut (%d of %d steps)", len(kept), len(steps))
        return _outcome(best[0], best[2], best[1], reasons, trials["n"])
    traced = graph.trace(fresh(), example_inputs, ignore=ignore, timeout=timeout, black_boxes=first.opaque)
    return _outcome(traced, [], Tracker(), reasons, trials["n"])


def _touched(traced: graph.Traced, steps: list[Step]) -> dict[str, tuple[str, ...]]:
    """Layers each step cuts, by qualified name, read off the trace before any cut."""
    return {label(step): step.kind.touched(traced, step) for step in steps}


def _suspects(layer: str, remaining: list[Step], touched) -> list[Step]:
    """Steps that cut the failing layer (or a module holding it); else, when few, those cutting inside it."""
    if not layer:
        return []
    on = [s for s in remaining if any(m == layer or layer.startswith(m + ".") for m in touched.get(label(s), ()))]
    if on:
        return on
    inside = [s for s in remaining if any(m.startswith(layer + ".") for m in touched.get(label(s), ()))]
    return inside if len(inside) <= 2 else []


def _outcome(traced, order, tracker, reasons, trials: int = 1) -> Outcome:
    checked = getattr(traced, "checked", {})
    exact = [label(s) for s in order if checked.get(label(s))]
    loose = [label(s) for s in order if not checked.get(label(s))]
    return Outcome(traced.model, traced, order, tracker, reasons, exact, loose, trials)
