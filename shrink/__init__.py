"""shrink: make trained PyTorch models physically smaller and faster, and prove it."""

from __future__ import annotations

from ._util.versions import __version__

# inspect
from .cut.analyze import GraphReport, GroupInfo, analyze

# cut
from .cut.compress import Result, compress
from .cut.iterative import compress_iteratively
from .cut.plan import Plan, Step

# masks (the seeds' family) and the bridge back to physical size
from .masks.compact import compact
from .masks.prune import SparsifyReport, SparsityReport, make_permanent, prune_iteratively, sparsify, sparsity
from .masks.sweep import SweepReport, sweep

# recover accuracy
from .recover.evaluate import evaluate
from .recover.train import fit, recalibrate_bn

# store
from .deploy.store import load, save
from .deploy.hf import save_pretrained
from .deploy.stream import StreamReport, compress_folder

# export
from .deploy.export import ExportReport, OutputParity, export_onnx

# measure
from .deploy.bench import BenchReport, BenchRow, benchmark
from .cut.measure import Measured, Size, count

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
    "save_pretrained",
    # a Hugging Face folder of any size, layer by layer from its shards
    "compress_folder",
    "StreamReport",
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
    "Measured",
    # errors
    "ShrinkError",
    "ShrinkValueError",
    "ShrinkTypeError",
    "UnsupportedLayerError",
    "PlanMismatchError",
    "CheckFailedError",
    "ParityError",
]
