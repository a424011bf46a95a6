"""The seeds' mask family, and the bridge back to physical size.

prune (sparsify, sparsity, make_permanent, iterative schedules) · compact (physically remove
units that masks made all zero) · sweep (weight vs unit pruning, seed 003).

May import: cut/, deploy/, layers/, _util/, errors. Entry points: `sparsify`, `sparsity`,
`make_permanent`, `prune_iteratively`, `compact`, `sweep`.
"""
