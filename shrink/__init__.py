"""shrink: make trained PyTorch models physically smaller and faster, and prove it."""

from __future__ import annotations

__version__ = "0.1.0"

# inspect
from .analyze import GraphReport, GroupInfo, analyze

# cut
from .compress import Result, compress
from .plan import Plan, Step

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
    "Result",
    "Plan",
    "Step",
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
