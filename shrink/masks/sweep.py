"""`sweep`: seed 003's experiment as a function. Weight pruning (masks) against unit pruning
(shrink's physical cut): accuracy, parameters and measured CPU latency at each sparsity."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from .._util.clone import clone
from .._util import checks
from .._util import inputs as _inputs
from ..deploy.bench import benchmark
from ..cut.compress import compress
from ..errors import ShrinkTypeError, ShrinkValueError
from .prune import make_permanent, sparsify, sparsity
from ..cut.measure import count_params

SEED_003_RATIOS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)


@dataclass(frozen=True)
class SweepRow:
    """One point of the sweep.

    Attributes:
        method: "weight" (unstructured L1 masks per layer) or "unit" (whole units cut physically).
        ratio: the fraction asked for (of each layer's weights, or of each group's units).
        sparsity: zero or removed weights over the original weights of the masked/cut layers.
        accuracy: what ``evaluate`` returned.
        params: parameters the model holds (masks do not shrink it).
        p50_ms: measured CPU latency of one call on the example inputs (PyTorch eager).
    """

    method: str
    ratio: float
    sparsity: float
    accuracy: float
    params: int
    p50_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SweepReport:
    """Rows of a sweep. Attributes: rows."""

    rows: tuple[SweepRow, ...]

    def to_dict(self) -> dict:
        return {"rows": [r.to_dict() for r in self.rows]}

    def to_markdown(self) -> str:
        lines = ["| method | ratio | sparsity | accuracy | params | p50 ms |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.method} | {r.ratio:.2f} | {r.sparsity:.2%} | {r.accuracy:.2%} | {r.params:,} | {r.p50_ms:.3f} |"
                  for r in self.rows]
        return "\n".join(lines) + "\n"

    def plot(self, path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for method in dict.fromkeys(r.method for r in self.rows):
            rows = [r for r in self.rows if r.method == method]
            ax.plot([r.ratio for r in rows], [r.accuracy for r in rows], marker="o", label=f"{method} pruning")
        ax.set_xlabel("fraction pruned (k)")
        ax.set_ylabel("accuracy")
        ax.set_title("Accuracy vs sparsity")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def _weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)))


def sweep(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    ratios: Sequence[float] = SEED_003_RATIOS,
    *,
    example_inputs,
    methods: Sequence[str] = ("weight", "unit"),
    norm: int = 2,
    latency_iters: int = 20,
) -> SweepReport:
    """Accuracy, size and latency of ``model`` pruned at each ratio by each method.

    Args:
        model: the trained model (left untouched).
        evaluate: ``model -> accuracy``.
        ratios: fractions to prune; seed 003's list by default.
        example_inputs: inputs for tracing and for timing.
        methods: "weight" (per-layer L1 unstructured masks) and/or "unit" (`compress`).
        norm: the norm ranking units (seed 003 used L2).
        latency_iters: timed calls per point.
    """
    checks.module(model)
    if not callable(evaluate):
        raise ShrinkTypeError(f"evaluate must be a function model -> accuracy; got {type(evaluate).__name__}")
    for r in ratios:
        checks.number(r, name="every ratio", low=0, high=0.999999, example=" e.g. ratios=(0.25, 0.5, 0.75).")
    if set(methods) - {"weight", "unit"}:
        raise ShrinkValueError(f"methods are 'weight' and 'unit'; got {list(methods)}")
    total = _weights(model)
    rows = []
    for method in methods:
        for ratio in ratios:
            if method == "weight":
                pruned = clone(model)
                if ratio > 0:
                    sparsify(pruned, float(ratio), include_last=True)
                    make_permanent(pruned)
                zeros = sum(l.weight_zeros for l in sparsity(pruned).layers)
            else:
                pruned = compress(model, example_inputs, ratio=min(float(ratio), 0.999), norm=norm).model
                zeros = total - _weights(pruned)
            bench = benchmark({"m": pruned}, example_inputs, runtimes=("torch",), devices=("cpu",), batch_sizes=(
                _inputs.batch_of(example_inputs),), warmup=3, iters=latency_iters, progress=False)
            rows.append(SweepRow(method, float(ratio), zeros / total, float(evaluate(pruned)), count_params(pruned),
                                 bench.rows[0].p50_ms))
    return SweepReport(tuple(rows))
