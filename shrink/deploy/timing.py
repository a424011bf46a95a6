"""Timing models in turn: warm-up, interleaved calls, and whether two models can be ranked.

Timing each model in its own block lets drift (other load, clock changes) pass for a speed-up;
alternating calls pairs them under the same conditions. Each pair of models is then compared
through the per-round ratio of their calls, whose median has a 95% interval from order
statistics: when that interval neither excludes 1 nor is narrow, the models cannot be ranked.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

# Automatic iteration counts: about this much timing per configuration, within these bounds.
# A batch-32 ResNet-50 (~1.5 s a call on 2 cores) gets 1 warm-up and 5 timed calls per runtime.
AUTO_SECONDS, AUTO_MIN_ITERS, AUTO_MAX_ITERS = 6.0, 5, 100


def _warm(calls: dict, device: str, warmup: int | None) -> float:
    """Run each call ``warmup`` times (None: until ~0.5 s or 10 calls each, at least once).

    Returns the milliseconds one round of all calls took, measured on the last warm-up round.
    """
    round_ms = 0.0
    for name, call in calls.items():
        n, started = 0, time.perf_counter()
        while n < (warmup if warmup is not None else 10):
            t0 = time.perf_counter()
            call()
            if device == "cuda":
                torch.cuda.synchronize()
            last = (time.perf_counter() - t0) * 1e3
            n += 1
            if warmup is None and time.perf_counter() - started > 0.5:
                break
        round_ms += last if n else 0.0
    return round_ms


def auto_iters(round_ms: float) -> int:
    """Timed rounds for about `AUTO_SECONDS` of timing, within the bounds."""
    return int(min(AUTO_MAX_ITERS, max(AUTO_MIN_ITERS, AUTO_SECONDS * 1e3 / max(round_ms, 1e-3))))


def ratio_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """95% interval and median of the per-round ratio a_i / b_i (order statistics of the median)."""
    r = np.sort(np.asarray(a[: len(b)]) / np.asarray(b[: len(a)]))
    n = len(r)
    k = max(0, int(math.floor(n / 2 - 0.98 * math.sqrt(n))))
    return float(r[k]), float(np.median(r)), float(r[n - 1 - k])


def rankable(low: float, high: float, equal_within: float = 0.02) -> bool:
    """The interval says which is faster, or that they are equal within ``equal_within``."""
    return low > 1 or high < 1 or (low >= 1 - equal_within and high <= 1 + equal_within)


def interleaved(calls: dict, device: str, warmup: int | None, iters: int | None,
                 times: dict | None = None) -> dict[str, list[float]]:
    """Time every call ``iters`` times, round-robin, so each model sees the same machine conditions.

    Timing each model in its own block lets drift (other load, clock changes) pass for a
    speed-up; alternating calls pairs them under the same conditions. The order rotates each
    round so no model always runs first. ``iters=None`` picks the count from the warm-up
    (`auto_iters`); ``times`` continues an earlier measurement (no warm-up then).
    """
    names = list(calls)
    if not names:
        return {}
    if times is None:
        round_ms = _warm(calls, device, warmup)
        times = {name: [] for name in names}
    else:
        round_ms = sum(float(np.median(times[n])) for n in names)
    iters = iters if iters is not None else auto_iters(round_ms)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
    for i in range(iters):
        for name in names[i % len(names):] + names[:i % len(names)]:
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                calls[name]()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                calls[name]()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def settle(calls, device, iters, times, intervals, notes, config) -> dict[str, list[float]]:
    """Compare each model with the first; take more rounds (automatic counts only) until ranked."""
    names = list(times)
    if len(names) < 2:
        return times
    first = names[0]
    base = len(times[first])
    for _ in range(3):
        open_pairs = [n for n in names[1:] if not rankable(*_lo_hi(times[n], times[first]))]
        if not open_pairs or iters is not None:
            break
        times = interleaved(calls, device, None, base, times)
    for n in names[1:]:
        low, mid, high = ratio_interval(times[n], times[first])
        intervals[(n, first, *config)] = (low, mid, high)
        if not rankable(low, high):
            rt, dev, b = config
            notes.append(f"{n} vs {first} ({rt} {dev} b{b}) cannot be ranked: latency ratio {mid:.3f} "
                         f"(95% interval {low:.3f}-{high:.3f}) after {len(times[n])} interleaved calls each. "
                         "Do not read a speed-up from this row; take more iterations or a quieter machine.")
    return times


def _lo_hi(a, b) -> tuple[float, float]:
    low, _, high = ratio_interval(a, b)
    return low, high
