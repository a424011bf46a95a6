"""The target loop: allocate widths, cut, measure against dense, adjust, or say why it cannot.

Speed targets (``speedup=``, ``latency_ms=``):
  Step 1: trace the model, list its knobs and layers (space), measure each layer's latency vs
          width on the runtime (tables, cached), and time the dense model.
  Step 2: calibrate: dense latency = overhead + sum of the layers' table times (or a scale, when
          the tables add up to more than the whole model).
  Step 3: allocate the widths that keep the most importance within the latency budget, cut them
          with the ratio-mode core of `compress`, and time the cut model against the dense one,
          interleaved as `benchmark` does.
  Step 4: met within the measurement's noise: done. Otherwise scale the budget by how far the
          measurement missed and go back to Step 3; after `MAX_ROUNDS`, or with every knob already
          at its narrowest, raise a `ShrinkError` with the best speed-up reached and what limits it.
Budgets (``macs=``, ``params=``): the same allocation with exact MAC/parameter costs, checked with
`shrink.count` and tightened until the count is within the budget.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path


from .._util.clone import clone
from ..cut import calibrate, graph, select
from ..cut.compress import Result, compress
from ..cut.measure import Measured, count
from ..errors import ShrinkError, ShrinkValueError
from ..layers import hf_config
from . import allocate as _alloc
from .space import Space, build, ratios
from .tables import Curves, LatencyTable, fast_widths
from .tie import tie

log = logging.getLogger(__name__)

MAX_ROUNDS = 5
VERIFY_SECONDS = 3.0  # timing per round, dense and compressed together (tests lower it)
OVERSHOOT = 1.15  # a met target overshot by more than this gets another round, keeping more width


def compress_to_target(model, example_inputs, *, target: dict, ratio, runtime: str, device: str, batch_size: int,
                       round_to, **options) -> Result:
    """`shrink.compress` with a speed target, a MACs/parameter budget, or ``round_to="auto"``."""
    started = time.perf_counter()
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ShrinkValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if target and options.get("inplace"):
        raise ShrinkValueError("inplace=True cannot be used with a target: each round cuts a fresh copy; "
                               "use result.model")
    if target and round_to is not None:
        raise ShrinkValueError("round_to= applies to ratio mode; a target snaps widths to measured fast ones itself")
    if options.get("scope") != "local":
        raise ShrinkValueError("speed targets, budgets and round_to='auto' choose per-group widths: use scope='local'")
    traced = graph.trace(clone(model), example_inputs, ignore=options.get("ignore", ()),
                         timeout=options.get("trace_timeout", 180.0))
    # Data-aware importance is measured once, here; every cut below reuses it.
    ranking = calibrate.prepare(traced, example_inputs, options.get("importance"), options.get("calibration"))
    if ranking is not None:
        options["calibration"] = ranking
    with ranking.applied(traced.model) if ranking is not None else contextlib.nullcontext():
        space = build(traced, example_inputs, p=options.get("norm", 1))
    uniform = options.get("uniform")
    if hf_config.is_hf(model) if uniform is None else uniform:
        space = tie(space, traced)  # compress would equalise each kind's widths: allocate them as one
    if not space.knobs:
        raise ShrinkValueError("the model has no group that can be narrowed (shrink.analyze lists why each layer "
                               "is kept whole), so no target can be reached by cutting")

    def cut(keep: list[int]) -> Result:
        return compress(model, example_inputs, ratio=ratios(space, keep), **options)

    if round_to == "auto":
        return _auto(model, space, ratio, LatencyTable(runtime, device, batch_size), cut, traced)
    kind, value = next(iter(target.items()))
    if kind in ("macs", "params"):
        result = _budget(model, example_inputs, space, kind, value, cut)
    else:
        result = _speed(model, example_inputs, space, kind, value, runtime, device, batch_size, cut)
    settings = {**result.plan.settings, "ratio": None, "target": dict(target), "runtime": runtime, "device": device,
                "batch_size": batch_size, "widths_kept": result.plan.settings.get("ratio")}
    log.info("target %s met in %.1f s", target, time.perf_counter() - started)
    return replace(result, plan=replace(result.plan, settings=settings))


# ratio mode, round_to="auto" ---------------------------------------------------------------------

def _auto(model, space: Space, ratio, table: LatencyTable, cut, traced) -> Result:
    """Each group keeps what ``ratio`` says, rounded up to the next width the table measured fast."""
    curves = Curves(space, table)
    keep = []
    for j, knob in enumerate(space.knobs):
        r = select.ratio_for(set(knob.members), ratio)
        want = knob.units - math.floor(r * knob.units + 1e-9)
        fast = fast_widths(curves.knob_curve(j))
        keep.append(min((n for n in fast if n >= max(want, 1)), default=knob.units))
    result = cut(keep)
    settings = {**result.plan.settings, "ratio": dict(ratio) if isinstance(ratio, dict) else ratio,
                "round_to": "auto", "runtime": table.runtime, "device": table.device, "batch_size": table.batch_size}
    return replace(result, plan=replace(result.plan, settings=settings))


# macs= / params= -----------------------------------------------------------------------------

def _budget(model, example_inputs, space: Space, kind: str, fraction: float, cut) -> Result:
    before = count(model, example_inputs)
    goal = fraction * getattr(before, kind)
    cost = _alloc.macs_cost(space) if kind == "macs" else _alloc.params_cost(space)
    full = [k.units for k in space.knobs]
    other = getattr(before, kind) - _alloc.total(space, cost, full)  # norms, embeddings, ...: not modelled
    candidates = [_alloc.fine_grid(k.units) for k in space.knobs]
    budget = goal - other
    for _ in range(12):
        keep = _alloc.allocate(space, cost, budget, candidates)
        if keep is None:
            break
        result = cut(keep)
        got = getattr(result.after, kind)
        if got <= goal:
            return result
        budget -= (got - goal) * 1.1 + 1  # the count found what the model missed: tighten by that
    floor = cut([min(c) for c in candidates])
    raise ShrinkValueError(
        f"{kind}={fraction} cannot be met: with every prunable group at its narrowest the model still has "
        f"{getattr(floor.after, kind):,} {kind} ({getattr(floor.after, kind) / getattr(before, kind):.3f} of the "
        f"original {getattr(before, kind):,}); the rest is in layers kept whole ({_kept(floor)}). "
        f"Ask for at least {kind}={math.ceil(getattr(floor.after, kind) / getattr(before, kind) * 1000) / 1000}.")


def _kept(result: Result) -> str:
    return ", ".join(sorted(result.plan.settings.get("ignore", []))) or "see shrink.analyze"


# speedup= / latency_ms= ----------------------------------------------------------------------

def _speed(model, example_inputs, space, kind, value, runtime, device, batch_size, cut) -> Result:
    from .._util import inputs as _inputs
    from ..deploy.bench import benchmark
    from ..deploy.export import export_onnx

    table = LatencyTable(runtime, device, batch_size)
    curves = Curves(space, table, progress=False)
    log.info("latency table: %d layers, %d new measurements (%s)", len(space.layers), table.measured, table.path)
    fast = [fast_widths(curves.knob_curve(j)) for j in range(len(space.knobs))]
    x = _inputs.with_batch(example_inputs, batch_size) if _inputs.batch_of(example_inputs) != batch_size \
        else example_inputs
    with tempfile.TemporaryDirectory() as tmp:
        dense = model
        if runtime == "onnxruntime":  # exported once; each round exports only the cut model
            dense = export_onnx(model, example_inputs, Path(tmp) / "dense.onnx").path

        def measure(cut_model):
            iters = int(min(200, max(10, VERIFY_SECONDS * 1e3 / (2 * probe.p50_ms))))
            rep = benchmark({"dense": dense, "compressed": cut_model}, x, runtimes=(runtime,), devices=(device,),
                            batch_sizes=(batch_size,), iters=iters, progress=False)
            rows = {r.model: r for r in rep.rows}
            if rows["dense"].skipped or rows["compressed"].skipped:
                raise ShrinkValueError(f"cannot time on {runtime} {device}: {rows['dense'].skipped}")
            low, mid, high = next(iter(rep.intervals.values()))  # of compressed/dense, per interleaved round
            return rows["dense"], rows["compressed"], 1 / high, 1 / mid, 1 / low

        probe = benchmark({"dense": dense}, x, runtimes=(runtime,), devices=(device,), batch_sizes=(batch_size,),
                          iters=10, progress=False).rows[0]
        full = [k.units for k in space.knobs]
        # Non-layer ops (BN, ReLU, adds, pooling) mostly shrink with width too: scale the tables to
        # the dense model, keeping only the runtime's per-call cost fixed.
        overhead = min(table.call_overhead(), 0.5 * probe.p50_ms)
        scale = (probe.p50_ms - overhead) / max(curves.total(full), 1e-9)

        def predict(keep):
            return overhead + scale * curves.total(keep)

        goal = value if kind == "speedup" else probe.p50_ms / value
        floor_keep = [min(f) for f in fast]
        budget = (probe.p50_ms / goal - overhead) / scale
        too_fast, too_slow = 0.0, math.inf  # budgets that overshot / missed: the answer lies between
        points = [(curves.total(full), probe.p50_ms)]  # (tables' total, measured ms as dense's timing sees it)
        best, chosen = None, None
        for rounds in range(1, MAX_ROUNDS + 1):
            keep = _alloc.allocate(space, curves.layer_time, budget, fast) if budget > 0 else None
            keep = keep or floor_keep
            result = cut(keep)
            # The paired estimate: median over rounds of dense/compressed, each pair timed back to back.
            d, c, low, s, high = measure(result.model)
            goal = value if kind == "speedup" else d.p50_ms / value  # latency_ms: against this round's dense
            noise = max(0.0, (s - low) / s) if math.isfinite(low) else 0.0
            met = s >= goal * (1 - min(noise, 0.05))
            measured = Measured(runtime, device, batch_size, {kind: value}, d.p50_ms, c.p50_ms, d.spread, c.spread,
                                s, low, high, probe.p50_ms / predict(keep), rounds, met)
            log.info("round %d: predicted x%.2f, measured x%.2f (target x%.2f)", rounds, measured.predicted_speedup,
                     s, goal)
            if best is None or s > best[1].speedup:
                best = (result, measured, keep)
            if met and (chosen is None or s < chosen[1].speedup):
                chosen = (result, measured)  # met with the least overshoot: the most importance kept
            if met and s <= goal * OVERSHOOT:
                break
            if keep == floor_keep and not met:
                break
            if met:
                too_fast = max(too_fast, budget)
            else:
                too_slow = min(too_slow, budget)
            # Missed by 10%: ask the tables for 10% less; overshot: give some back. Never leave
            # the bracket the earlier rounds established (that is how the loop would oscillate).
            points.append((curves.total(keep), probe.p50_ms / s))
            budget = next_budget(points, probe.p50_ms / goal)
            if budget is None:
                budget = (predict(keep) * s / goal - overhead) / scale
            if not too_fast < budget < too_slow:
                budget = math.sqrt(max(too_fast, 1e-9) * too_slow) if math.isfinite(too_slow) else too_fast * 2
        if chosen is not None:
            return replace(chosen[0], measured=chosen[1])
        raise _limit_error(kind, value, best, space, curves, overhead, scale, probe.p50_ms, floor_keep, runtime,
                           device, batch_size)


def next_budget(points: list[tuple[float, float]], want_ms: float) -> float | None:
    """The tables' total expected to measure ``want_ms``: a secant through the two measured
    points that bracket it (else the two nearest it), dense included.

    Measured time is close to affine in the tables' total, ``ms = fixed + a * total``, where the
    fixed part (per-node costs of the runtime, element-wise ops that do not shrink in step) is
    unknown before cutting; MobileNetV2 on ONNX Runtime CPU keeps about a third of its batch-1 time
    at any width. Scaling the budget by how far a round missed assumes no fixed part and
    under-corrects by it; the secant learns it from the rounds. None when the points give no
    usable slope (then the caller scales).
    """
    above = [p for p in points if p[1] > want_ms]
    below = [p for p in points if p[1] <= want_ms]
    if above and below:
        pair = [min(above, key=lambda p: p[1]), max(below, key=lambda p: p[1])]
    else:
        pair = sorted(points, key=lambda p: abs(p[1] - want_ms))[:2]
    if len(pair) < 2:
        return None
    (t1, m1), (t2, m2) = pair
    if t1 == t2 or (m2 - m1) / (t2 - t1) <= 0:
        return None
    t = t1 + (want_ms - m1) * (t2 - t1) / (m2 - m1)
    return t if t > 0 else None


def _limit_error(kind, value, best, space, curves, overhead, scale, dense_ms, floor_keep, runtime, device, batch):
    result, m, keep = best
    fixed = [(curves.layer_time(i, floor_keep) * scale, layer.name) for i, layer in enumerate(space.layers)
             if layer.knob_in is None and layer.knob_out is None]
    fixed_ms = sum(t for t, _ in fixed)
    layers_ms = scale * curves.total(floor_keep)
    top = ", ".join(f"{n!r} {_ms(t)}" for t, n in sorted(fixed, reverse=True)[:3])
    asked = f"speedup={value}" if kind == "speedup" else f"latency_ms={value}"
    if keep == floor_keep:  # measured at the narrowest widths: the rest is what does not shrink
        floor = (f"at the narrowest widths the tables allow the cut model still takes {_ms(m.compressed_p50_ms)}: "
                 f"{_ms(layers_ms)} in convolution/linear layers ({_ms(fixed_ms)} of it in layers kept whole"
                 f"{': ' + top if top else ''}) and {_ms(max(m.compressed_p50_ms - layers_ms, 0))} in operations "
                 f"that do not shrink with width (element-wise ops, norms, attention matmuls, the runtime's "
                 f"per-call cost), so about x{m.dense_p50_ms / max(m.compressed_p50_ms, 1e-9):.1f} is the most "
                 f"this model allows here")
    else:
        floor = (f"the rounds ran out before the narrowest widths ({MAX_ROUNDS} rounds); layers kept whole take "
                 f"{_ms(fixed_ms)}{' (' + top + ')' if top else ''} and the narrowest widths are predicted at "
                 f"x{dense_ms / max(overhead + layers_ms, 1e-9):.1f}")
    return ShrinkError(
        f"{asked} was not reached on {runtime} {device} batch {batch}: the best measured speed-up is "
        f"x{m.speedup:.2f} (95% interval {m.speedup_low:.2f}-{m.speedup_high:.2f}; dense {_ms(m.dense_p50_ms)}, "
        f"compressed {_ms(m.compressed_p50_ms)}, {m.rounds} rounds). What limits it: {floor}. Ask for less, or "
        f"pass a ratio and accept the speed it gives.")


def _ms(t: float) -> str:
    return f"{t:.3g} ms"
