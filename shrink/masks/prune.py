"""The seeds' mask-based pruning, as a thin typed layer over `torch.nn.utils.prune`.

Masks zero weights but keep every tensor its full size: a masked model is exactly as big and as
slow as before (seed 002's closing remark). `shrink.compact` turns zeros into a smaller model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from .._util import checks
from ..errors import ShrinkTypeError, ShrinkValueError

_PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class SparsifyReport:
    """What `sparsify` did.

    Attributes:
        touched: qualified names of the layers that got (more) masked.
        left_alone: ``(name, reason)`` for prunable layers not touched.
        method, scope, structured: as asked.
        amount: as asked (a fraction, or a count of weights/units).
    """

    touched: tuple[str, ...]
    left_alone: tuple[tuple[str, str], ...]
    method: str
    scope: str
    structured: bool
    amount: float | int

    def to_dict(self) -> dict:
        return asdict(self)


def _targets(model: nn.Module, filter_fn, include_last: bool) -> tuple[list[tuple[str, nn.Module]], list]:
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _PRUNABLE)]
    left = []
    if layers and not include_last and filter_fn is None:
        name, _ = layers.pop()
        left.append((name, "final classifier (pass include_last=True to mask it too)"))
    if filter_fn is not None:
        kept = [(n, m) for n, m in layers if filter_fn(n, m)]
        left += [(n, "filter_fn") for n, m in layers if not filter_fn(n, m)]
        layers = kept
    return layers, left


def _check_amount(amount) -> None:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ShrinkTypeError(f"amount must be a fraction (float) or a count (int); got {amount!r}")
    if isinstance(amount, float) and not 0.0 <= amount <= 1.0:
        raise ShrinkValueError(f"a fractional amount must be within [0, 1]; got {amount}")
    if isinstance(amount, int) and amount < 0:
        raise ShrinkValueError(f"a count amount must be >= 0; got {amount}")


def sparsify(
    model: nn.Module,
    amount: float | int,
    *,
    method: str = "l1",
    scope: str = "local",
    structured: bool = False,
    dim: int = 0,
    filter_fn: Callable[[str, nn.Module], bool] | None = None,
    include_last: bool = False,
    seed: int | None = None,
) -> SparsifyReport:
    """Mask weights of Linear and conv layers with `torch.nn.utils.prune` (in place).

    Args:
        model: the model to mask.
        amount: fraction of the (still unmasked) weights to mask, or their count, as torch takes it.
        method: "l1" (smallest magnitude) or "random".
        scope: "local" (each layer loses ``amount``) or "global" (one threshold over all layers;
            unstructured only).
        structured: mask whole slices along ``dim`` (dim=0: output units / filters) by their L2 norm
            (``ln_structured``) or at random.
        filter_fn: ``(name, module) -> bool`` choosing the layers; by default every Linear and conv
            but the last one (the classifier).
        include_last: mask the last layer too.
        seed: seed for method="random".

    Returns:
        A `SparsifyReport` naming the layers touched and those left alone.
    """
    _check_amount(amount)
    if method not in ("l1", "random"):
        raise ShrinkValueError(f"method must be 'l1' or 'random'; got {method!r}")
    if scope not in ("local", "global"):
        raise ShrinkValueError(f"scope must be 'local' or 'global'; got {scope!r}")
    if scope == "global" and structured:
        raise ShrinkValueError("global scope masks single weights; use structured=True with scope='local'")
    checks.module(model)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise ShrinkTypeError(f"dim must be an int (0: output units / filters); got {dim!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ShrinkTypeError(f"seed must be None or an int; got {seed!r}")
    layers, left = _targets(model, filter_fn, include_last)
    if not layers:
        raise ShrinkValueError("no Linear or conv layer to mask; check filter_fn / include_last")
    # Every layer is checked before the first is masked: a refusal leaves the model as it was.
    _check_fits(layers, amount, scope, structured, dim)
    rng = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        if scope == "global":
            method_cls = prune.L1Unstructured if method == "l1" else prune.RandomUnstructured
            prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=method_cls, amount=amount)
        else:
            for _, m in layers:
                if structured and method == "l1":
                    prune.ln_structured(m, "weight", amount=amount, n=2, dim=dim)
                elif structured:
                    prune.random_structured(m, "weight", amount=amount, dim=dim)
                elif method == "l1":
                    prune.l1_unstructured(m, "weight", amount=amount)
                else:
                    prune.random_unstructured(m, "weight", amount=amount)
    return SparsifyReport(tuple(n for n, _ in layers), tuple(left), method, scope, structured, amount)


def _check_fits(layers, amount, scope: str, structured: bool, dim: int) -> None:
    """A count must fit every layer it applies to (the whole set, for global scope); dim must exist."""
    if structured:
        for name, m in layers:
            if not -m.weight.dim() <= dim < m.weight.dim():
                raise ShrinkValueError(f"dim={dim} does not exist in {name!r}, whose weight has {m.weight.dim()} "
                                       "dimensions; dim=0 masks output units / filters")
    if isinstance(amount, float):
        return
    if scope == "global":
        total = sum(m.weight.numel() for _, m in layers)
        if amount > total:
            raise ShrinkValueError(f"amount={amount} weights is more than the {total} weights of the layers "
                                   "masked together; pass a count <= that, or a fraction such as 0.5")
        return
    sizes = {name: m.weight.shape[dim] if structured else m.weight.numel() for name, m in layers}
    small = sorted(n for n, size in sizes.items() if amount > size)
    if small:
        unit = f"slices along dim {dim}" if structured else "weights"
        raise ShrinkValueError(
            f"amount={amount} {unit} is more than layer(s) {small} have (e.g. {small[0]!r}: {sizes[small[0]]}); "
            "no layer was masked. Pass a fraction such as 0.5, a smaller count, or leave those layers out "
            "with filter_fn=."
        )


@dataclass(frozen=True)
class LayerSparsity:
    """Zeros in one layer. Attributes: name, weight_zeros, weight_total, bias_zeros, bias_total, from_mask."""

    name: str
    weight_zeros: int
    weight_total: int
    bias_zeros: int
    bias_total: int
    from_mask: bool

    @property
    def weight_sparsity(self) -> float:
        return self.weight_zeros / max(self.weight_total, 1)


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity per layer and over the whole model, weights and biases counted apart.

    Attributes:
        layers: one `LayerSparsity` per Linear/conv layer.
    """

    layers: tuple[LayerSparsity, ...]

    @property
    def weight_sparsity(self) -> float:
        """Global: masked (or zero) weights over all weights of the layers."""
        return sum(l.weight_zeros for l in self.layers) / max(sum(l.weight_total for l in self.layers), 1)

    @property
    def bias_sparsity(self) -> float:
        return sum(l.bias_zeros for l in self.layers) / max(sum(l.bias_total for l in self.layers), 1)

    def to_dict(self) -> dict:
        return {"weight_sparsity": self.weight_sparsity, "bias_sparsity": self.bias_sparsity,
                "layers": [asdict(l) | {"weight_sparsity": l.weight_sparsity} for l in self.layers]}

    def __str__(self) -> str:
        rows = [f"{'layer':30s} {'weights':>10s} {'sparsity':>9s}  source"]
        rows += [f"{l.name:30s} {l.weight_total:10d} {l.weight_sparsity:9.2%}  {'mask' if l.from_mask else 'zeros'}"
                 for l in self.layers]
        rows.append(f"{'global':30s} {sum(l.weight_total for l in self.layers):10d} {self.weight_sparsity:9.2%}")
        return "\n".join(rows)


def _zeros(module: nn.Module, name: str) -> tuple[int, int, bool]:
    mask = getattr(module, f"{name}_mask", None)
    if isinstance(mask, torch.Tensor):
        return int((mask == 0).sum()), mask.numel(), True
    tensor = getattr(module, name, None)
    if not isinstance(tensor, torch.Tensor):
        return 0, 0, False
    return int((tensor == 0).sum()), tensor.numel(), False


def sparsity(model: nn.Module) -> SparsityReport:
    """Per-layer and global sparsity, read from prune masks where present, else from exact zeros."""
    checks.module(model)
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, _PRUNABLE):
            wz, wt, from_mask = _zeros(m, "weight")
            bz, bt, _ = _zeros(m, "bias")
            layers.append(LayerSparsity(name, wz, wt, bz, bt, from_mask))
    return SparsityReport(tuple(layers))


def make_permanent(model: nn.Module) -> list[str]:
    """Bake every `torch.nn.utils.prune` mask into its weight; returns the names of the layers baked."""
    checks.module(model)
    baked = []
    for name, m in model.named_modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(m, hook._tensor_name)
                baked.append(name)
    return baked


def step_targets(target: float, steps: int, schedule: str = "geometric") -> list[float]:
    """Cumulative sparsity after each step. Geometric: each step masks the same share gamma of what
    is left, so after k steps 1-(1-gamma)^k (seed 002); gamma = 1-(1-target)^(1/steps)."""
    numbers = isinstance(target, (int, float)) and isinstance(steps, int) and not isinstance(steps, bool)
    if not numbers or isinstance(target, bool) or not 0 <= target < 1 or steps < 1:
        raise ShrinkValueError(f"need 0 <= target < 1 and steps >= 1; got target={target}, steps={steps}")
    if schedule == "geometric":
        gamma = 1 - (1 - target) ** (1 / steps)
        return [1 - (1 - gamma) ** k for k in range(1, steps + 1)]
    if schedule == "linear":
        return [target * k / steps for k in range(1, steps + 1)]
    raise ShrinkValueError(f"schedule must be 'geometric' or 'linear'; got {schedule!r}")


def prune_iteratively(
    model: nn.Module,
    target: float,
    steps: int,
    *,
    finetune: Callable[[nn.Module, int], object] | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    method: str = "l1",
    scope: str = "local",
    schedule: str = "geometric",
    filter_fn=None,
    include_last: bool = False,
    seed: int | None = None,
) -> list[dict]:
    """Mask up to ``target`` sparsity in ``steps`` steps, fine-tuning between them (seed 002).

    Each step's amount is a count computed from what is already masked, so the cumulative sparsity
    is on schedule to the weight: ``round(s_k * n)`` masked after step k (per layer for local
    scope, over all layers for global).

    Returns:
        One dict per step: step, target sparsity, achieved sparsity, and the metric if ``evaluate``.
    """
    checks.module(model)
    log = []
    for k, s_k in enumerate(step_targets(target, steps, schedule), start=1):
        layers, _ = _targets(model, filter_fn, include_last)
        if scope == "global":
            total = sum(m.weight.numel() for _, m in layers)
            done = sum(_zeros(m, "weight")[0] if hasattr(m, "weight_mask") else 0 for _, m in layers)
            amount = max(round(s_k * total) - done, 0)
            sparsify(model, amount, method=method, scope="global", filter_fn=_only(layers), seed=seed)
        else:
            for name, m in layers:
                done = _zeros(m, "weight")[0] if hasattr(m, "weight_mask") else 0
                amount = max(round(s_k * m.weight.numel()) - done, 0)
                sparsify(model, amount, method=method, filter_fn=_only([(name, m)]), seed=seed)
        if finetune is not None:
            finetune(model, k)
        report = sparsity(model)
        chosen = {n for n, _ in layers}
        achieved = sum(l.weight_zeros for l in report.layers if l.name in chosen) / max(
            sum(l.weight_total for l in report.layers if l.name in chosen), 1)
        entry = {"step": k, "target_sparsity": s_k, "sparsity": achieved}
        if evaluate is not None:
            entry["metric"] = evaluate(model)
        log.append(entry)
    return log


def _only(layers: Iterable[tuple[str, nn.Module]]):
    ids = {id(m) for _, m in layers}
    return lambda name, module: id(module) in ids
