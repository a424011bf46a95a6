"""shrink: make trained PyTorch models physically smaller and faster, and prove it."""

from __future__ import annotations

__version__ = "0.1.0"

# inspect
from .analyze import GraphReport, GroupInfo, analyze

# cut
from .compress import Result, compress
from .iterative import compress_iteratively
from .plan import Plan, Step

# masks (the seeds' family) and the bridge back to physical size
from .compact import compact
from .masks import SparsifyReport, SparsityReport, make_permanent, prune_iteratively, sparsify, sparsity
from .sweep import SweepReport, sweep

# recover accuracy
from .train import evaluate, fit, recalibrate_bn

# store
from .io import load, save

# export
from .export import ExportReport, OutputParity, export_onnx

# measure
from .bench import BenchReport, BenchRow, benchmark
from .measure import Size, count

# errors
from .errors import (
    CheckFailedError,
    ParityError,
    PlanMismatchError,
    ShrinkError,
    ShrinkTypeError,
    ShrinkValueError,
    UnsupportedLayerError,
)

__all__ = [
    # inspect
    "analyze",
    "GraphReport",
    "GroupInfo",
    # cut
    "compress",
    "compress_iteratively",
    "Result",
    "Plan",
    "Step",
    # masks
    "sparsify",
    "sparsity",
    "make_permanent",
    "prune_iteratively",
    "compact",
    "sweep",
    "SparsifyReport",
    "SparsityReport",
    "SweepReport",
    # recover accuracy
    "fit",
    "evaluate",
    "recalibrate_bn",
    # store
    "save",
    "load",
    # export
    "export_onnx",
    "ExportReport",
    "OutputParity",
    # measure
    "benchmark",
    "BenchReport",
    "BenchRow",
    "count",
    "Size",
    # errors
    "ShrinkError",
    "ShrinkValueError",
    "ShrinkTypeError",
    "UnsupportedLayerError",
    "PlanMismatchError",
    "CheckFailedError",
    "ParityError",
]
