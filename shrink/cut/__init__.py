"""The engine: trace the dependency graph, rank units, choose what goes, cut it out physically.

Steps of `compress`, one module each: graph (trace, groups, output/input protection; grouping:
the group walk; opaque: black boxes and the time budget) ·
importance (ranking) · select (what goes, per group) · surgery (physical removal) · plan (kept
indices, JSON) · measure (params, MACs). Also analyze (the report of what compress would see)
and iterative (several rounds, traced afresh).

May import: layers/, _util/, errors. Entry points: `compress`, `analyze`, `compress_iteratively`.
"""
