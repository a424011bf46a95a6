"""Speed targets: compress to a measured speed-up, a latency, or a MACs/parameter budget.

space (the widths that can change: channel groups and attention heads, and the layers each one
narrows) · tables (latency of each layer vs width, measured on the runtime/device/batch and cached
per machine) · allocate (per-group widths keeping the most L1 importance under a budget, snapped to
widths measured fast) · solve (the loop: allocate, cut, measure against dense, adjust, or raise).

`shrink.compress(..., speedup=2)` hands over to `solve.compress_to_target`, which calls back into the
ratio-mode core of `compress` with one ratio per group. This folder sits above deploy/.

May import: cut/, deploy/, layers/, _util/, errors. Entry points: `compress_to_target`, `auto_round`.
"""
