"""Hugging Face mixture-of-experts blocks (Mixtral, ...): every expert's FFN cut alike, the router untouched.

transformers 5 stores all experts of a block as one 3-D tensor per projection and picks an
expert's slice by index at run time, which the dependency graph does not see:

- ``gate_up_proj`` [experts, 2 x intermediate, hidden]: gate rows, then up rows (concatenated);
- ``down_proj`` [experts, hidden, intermediate];
- the router reads the hidden width through a bare weight [experts, hidden].

So the whole block stays out of the graph's width groups (`kept_whole`; the hidden width the
router reads stays whole with it), and this file cuts the experts' *intermediate* units itself:
unit j of expert e is gate row j, up row intermediate + j and down column j of that expert, and
removing it equals zeroing down column j (act(gate) x up x 0). Each expert ranks its own units;
every expert loses the same count, so ``config.intermediate_size`` states the new width. A plan
step names the experts module and lists ``e * intermediate + j`` for every unit removed.

Export: transformers' default experts implementation (``grouped_mm``) has no ONNX translation;
`exportable` switches the model to ``batched_mm`` (a gather and batched matmuls, same maths)
while it is exported, and back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .rows import powered_sums

EXPORT_IMPLEMENTATION = "batched_mm"


def _stacked_experts(module: nn.Module) -> bool:
    experts = getattr(module, "experts", None)
    return isinstance(experts, nn.Module) and any(p.dim() == 3 for p in experts.parameters(recurse=False))


def kept_whole(model: nn.Module) -> set[nn.Module]:
    """Every module inside a mixture-of-experts block whose experts are stacked 3-D tensors."""
    out: set[nn.Module] = set()
    for module in model.modules():
        if type(module).__module__.startswith("transformers.") and _stacked_experts(module):
            out.update(module.modules())
    return out


def cuttable(experts: nn.Module) -> bool:
    """Experts laid out as this file cuts them: gated, concatenated [gate | up], not transposed, no bias."""
    gate_up, down = getattr(experts, "gate_up_proj", None), getattr(experts, "down_proj", None)
    if not (isinstance(gate_up, torch.Tensor) and isinstance(down, torch.Tensor)):
        return False
    if gate_up.dim() != 3 or down.dim() != 3:
        return False
    if not getattr(experts, "has_gate", False) or getattr(experts, "has_bias", True):
        return False
    if getattr(experts, "is_transposed", True) or not getattr(experts, "is_concatenated", False):
        return False
    e, two_i, h = gate_up.shape
    return down.shape == (e, h, two_i // 2) and two_i % 2 == 0 and getattr(experts, "intermediate_dim", None) == two_i // 2


def expert_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, experts module) of every block whose experts this file can cut."""
    return [(f"{name}.experts" if name else "experts", module.experts) for name, module in model.named_modules()
            if type(module).__module__.startswith("transformers.") and _stacked_experts(module)
            and cuttable(module.experts)]


def width(experts: nn.Module) -> int:
    """Intermediate units per expert."""
    return int(experts.down_proj.shape[-1])


def unit_scores(experts: nn.Module, p: int) -> torch.Tensor:
    """[experts, intermediate]: Lp norm of each unit's gate row, up row and down column together."""
    n = width(experts)
    with torch.no_grad():
        gate, up = experts.gate_up_proj[:, :n], experts.gate_up_proj[:, n:]
        total = torch.stack([powered_sums(g, p) + powered_sums(u, p) + powered_sums(d.t(), p)
                             for g, u, d in zip(gate, up, experts.down_proj)])
    return total.pow(1.0 / p).float()


def choose(experts: nn.Module, count: int, p: int) -> tuple[int, ...]:
    """The ``count`` lowest-scored units of every expert, as ``e * intermediate + j``."""
    scores, n = unit_scores(experts, p), width(experts)
    count = max(0, min(count, n - 1))  # every expert keeps at least one unit
    out = []
    for e, row in enumerate(scores):
        out += [e * n + j for j in sorted(torch.argsort(row, stable=True)[:count].tolist())]
    return tuple(out)


def per_expert(experts: nn.Module, removed) -> list[list[int]]:
    """``removed`` (flat ``e * intermediate + j``) as one sorted list of units per expert."""
    n, e = width(experts), int(experts.down_proj.shape[0])
    units: list[list[int]] = [[] for _ in range(e)]
    for i in removed:
        if not 0 <= int(i) < e * n:
            raise ValueError(f"unit {i} is out of range for {e} experts of {n} units")
        units[int(i) // n].append(int(i) % n)
    counts = {len(u) for u in units}
    if len(counts) != 1 or counts == {n}:
        raise ValueError(f"every expert must lose the same number of units, and keep at least one; got "
                         f"{[len(u) for u in units]} of {n}")
    return [sorted(u) for u in units]


def cut(experts: nn.Module, removed) -> None:
    """Remove the units ``removed`` (flat ``e * intermediate + j``) from every expert of the block."""
    n = width(experts)
    units = per_expert(experts, removed)
    keep = torch.tensor([[j for j in range(n) if j not in set(u)] for u in units])  # [experts, kept]
    with torch.no_grad():
        gate_up = experts.gate_up_proj
        rows = torch.cat([keep, keep + n], dim=1)  # gate rows, then up rows: [gate | up] stays concatenated
        new_gate_up = torch.gather(gate_up, 1, rows.unsqueeze(-1).expand(-1, -1, gate_up.shape[-1]))
        down = experts.down_proj
        new_down = torch.gather(down, 2, keep.unsqueeze(1).expand(-1, down.shape[1], -1))
    experts.gate_up_proj = nn.Parameter(new_gate_up.contiguous(), requires_grad=gate_up.requires_grad)
    experts.down_proj = nn.Parameter(new_down.contiguous(), requires_grad=down.requires_grad)
    experts.intermediate_dim = keep.shape[1]


def shared_mlp(model: nn.Module, block_name: str) -> tuple[nn.Module, int] | None:
    """The shared experts' MLP of a block, and how many experts wide it is, where the config builds
    it from the routed experts' width (DeepSeek: ``moe_intermediate_size * n_shared_experts``; GLM-4
    MoE, Ernie 4.5 MoE): a cut of the routed experts must narrow it alike. None elsewhere (Qwen2-MoE's
    ``shared_expert`` has a width field of its own)."""
    parent = model.get_submodule(block_name.rsplit(".", 1)[0]) if "." in block_name else model
    mlp, config = getattr(parent, "shared_experts", None), getattr(model, "config", None)
    n = next((getattr(config, k) for k in ("n_shared_experts", "moe_num_shared_experts", "num_shared_experts")
              if isinstance(getattr(config, k, None), int)), None)
    layers = [getattr(mlp, k, None) for k in ("gate_proj", "up_proj", "down_proj")]
    if not isinstance(n, int) or n < 1 or not all(isinstance(m, nn.Linear) for m in layers):
        return None
    experts = getattr(parent, "experts", None)
    if experts is None or layers[2].in_features != n * width(experts):
        return None
    return mlp, n


def shared_units(mlp: nn.Module, count: int, p: int) -> list[int]:
    """The ``count`` lowest-scored units of a shared MLP (gate and up rows, down column together)."""
    with torch.no_grad():
        total = sum(powered_sums(m.weight, p) for m in (mlp.gate_proj, mlp.up_proj))
        total = total + powered_sums(mlp.down_proj.weight.t(), p)
    return sorted(torch.argsort(total, stable=True)[:count].tolist())


def cut_shared(mlp: nn.Module, removed: list[int]) -> None:
    """Remove units ``removed`` from a shared MLP: rows of gate/up, columns of down."""
    keep = torch.tensor([j for j in range(mlp.down_proj.in_features) if j not in set(removed)], dtype=torch.long)
    with torch.no_grad():
        for layer in (mlp.gate_proj, mlp.up_proj):
            layer.weight = nn.Parameter(layer.weight.index_select(0, keep).clone())
            if layer.bias is not None:
                layer.bias = nn.Parameter(layer.bias.index_select(0, keep).clone())
            layer.out_features = len(keep)
        mlp.down_proj.weight = nn.Parameter(mlp.down_proj.weight.index_select(1, keep).clone())
        mlp.down_proj.in_features = len(keep)
    if isinstance(getattr(mlp, "intermediate_size", None), int):
        mlp.intermediate_size = len(keep)


@contextmanager
def exportable(model: nn.Module) -> Iterator[list[str]]:
    """While active, the model's experts run an implementation the ONNX exporters can translate.

    Yields notes for the export report (empty when nothing was switched).
    """
    config = getattr(model, "config", None)
    current = getattr(config, "_experts_implementation", None)
    notes: list[str] = []
    if config is None or not kept_whole(model) or current == EXPORT_IMPLEMENTATION:
        yield notes
        return
    config._experts_implementation = EXPORT_IMPLEMENTATION
    notes.append(f"exported the mixture-of-experts blocks with experts_implementation={EXPORT_IMPLEMENTATION!r} "
                 f"(the model's {current!r} does not export: no ONNX translation, or routing fixed at trace time); the model is set back afterwards")
    try:
        yield notes
    finally:
        config._experts_implementation = current
