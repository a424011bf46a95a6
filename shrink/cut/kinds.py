"""Cut kinds: one class per kind of plan step, holding everything the engine asks of a step.

A `Step` is data, what a plan file stores; its ``op`` names its kind and ``step.kind`` is the
instance below that knows how to cut it (surgery.py), which read-outs the masking check zeroes and
whether that check is exact (verify.py), which layers it touches (heal.py), and which ``dim``
values a plan file may give it. Uniform widths (uniform.py) also ask the two kinds that are ranked
by candidates of the trace, groups and attention blocks, how big a candidate is, whether it must
stay whole, how many units a step removes from it and which units a given count removes.

- `GroupCut` ("group"): a coupled channel group, cut through torch-pruning's dependency graph.
- `HeadCut` ("heads"): whole heads (or key/value groups) of one attention block.
- `HeadDimCut` ("head_dims"): the same dims of every head of attention tied to its input width
  (layers/tied_attention.py), ``removed`` as ``head * head_dim + dim``.
- `ExpertCut` ("experts"): the same FFN units of every expert of a mixture-of-experts block
  (layers/hf_moe.py), ``removed`` as ``expert * intermediate + unit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import torch
from torch import nn

from ..errors import PlanMismatchError
from ..layers import attention, hf_moe, input_width_heads, registry, tied_attention
from . import units as _units
from . import verify
from .graph import tied_elsewhere
from .plan import Step


class CutKind:
    """What one kind of step does; the engine calls these methods, never tests ``step.op``.

    Attributes:
        op: the name plan files store.
        dims: the ``dim`` values a step of this kind may have (the first is its default).
    """

    op: ClassVar[str]
    dims: ClassVar[tuple[str, ...]]

    def step(self, layer: str, removed, *, dim: str = "", partner: str = "") -> Step:
        """A step of this kind removing ``removed`` (indices) from ``layer``."""
        return Step(self.op, layer, dim or self.dims[0], tuple(int(i) for i in removed), partner)

    def apply(self, step: Step, surgery, tracker) -> None:
        """Cut ``step`` from the model ``surgery`` (surgery.Surgery) holds, recording kept indices."""
        raise NotImplementedError

    def exact(self, traced, step: Step) -> bool:
        """Whether the cut can be checked against masking exactly (else: runs and keeps shapes)."""
        raise NotImplementedError

    def readouts(self, traced, step: Step) -> list[tuple[nn.Module, list[int]]]:
        """(consumer, input channels to zero) that mask the cut, in the model's current coordinates."""
        raise NotImplementedError

    def touched(self, traced, step: Step) -> tuple[str, ...]:
        """Layers the step cuts, by qualified name, read off the trace before any cut."""
        return (step.layer,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GroupCut(CutKind):
    op = "group"
    dims = ("out", "in")

    def apply(self, step: Step, surgery, tracker) -> None:
        dg, module = surgery.dg, surgery.get(step.layer, step)
        pruner = dg.get_pruner_of_module(module)
        if pruner is None:
            raise PlanMismatchError(f"the plan cuts {step.layer!r}, a {type(module).__name__} shrink cannot cut")
        fn = pruner.prune_out_channels if step.dim == "out" else pruner.prune_in_channels
        size = pruner.get_out_channels(module) if step.dim == "out" else pruner.get_in_channels(module)
        if step.removed and max(step.removed) >= size:
            raise PlanMismatchError(
                f"the plan removes index {max(step.removed)} of {step.layer!r} ({step.dim}), "
                f"which has only {size} channels here. Load the plan onto the architecture it was made from."
            )
        # A tensor tied to another group is cut once: that group loses the same indices (graph.tied_elsewhere).
        groups = _with_tied(dg, dg.get_pruning_group(module, fn, list(step.removed)), list(step.removed))
        for group in groups:
            _cut_group(group, surgery, tracker)

    def exact(self, traced, step: Step) -> bool:
        group = verify.find_group(traced, step)
        if group is None or not all(verify.exact(g) for g in (group, *group.followers)):
            return False
        # A width that also narrows tied heads is cut together with their head_dims step.
        tied_inputs = {(traced.names[b.qkv], "in") for b in getattr(traced, "tied", ())}
        return not tied_inputs & {(m.name, m.dim) for m in group.parts}

    def readouts(self, traced, step: Step) -> list[tuple[nn.Module, list[int]]]:
        root = traced.model.get_submodule(step.layer)
        pruner = traced.dg.get_pruner_of_module(root)
        fn = pruner.prune_out_channels if step.dim == "out" else pruner.prune_in_channels
        found = []
        removed = list(step.removed)
        for group in _with_tied(traced.dg, traced.dg.get_pruning_group(root, fn, removed), removed):
            for item in group:
                module = item.dep.target.module
                if not isinstance(module, nn.Module) or traced.dg.is_out_channel_pruning_fn(item.dep.handler):
                    continue
                if verify.reads_channels(module):
                    found.append((module, [int(i) for i in item.idxs]))
        return found

    def touched(self, traced, step: Step) -> tuple[str, ...]:
        group = verify.find_group(traced, step)
        return tuple(m.name for g in (group, *group.followers) for m in g.parts) if group else (step.layer,)

    # Uniform widths: the candidate is a traced `Group`.
    def name_of(self, group) -> str:
        return group.root_name

    def size(self, group) -> int:
        return group.width

    def whole(self, group) -> bool:
        return group.protected is not None or group.width % group.channel_groups != 0

    def count(self, traced, group, step: Step) -> int:
        return _units.count(traced, group, step.removed)

    def lowest(self, traced, group, dim: str, n: int, p: int) -> Step:
        units = _lowest(_units.unit_scores(traced, group, p), n)
        return self.step(group.root_name, _units.channels(traced, group, list(units)), dim=dim)


class HeadCut(CutKind):
    op = "heads"
    dims = ("heads",)

    def _block(self, blocks: Mapping, step: Step) -> attention.AttentionBlock:
        block = blocks.get(step.layer)
        if block is None:
            raise PlanMismatchError(f"the plan cuts heads of {step.layer!r}, which is no attention block here")
        return block

    def apply(self, step: Step, surgery, tracker) -> None:
        block = self._block(surgery.blocks, step)
        block.out = surgery.get(step.partner, step)
        if step.removed and (max(step.removed) >= block.units or len(step.removed) >= block.units):
            raise PlanMismatchError(
                f"the plan removes heads {sorted(step.removed)} of {step.layer!r}, which has {block.units} "
                "here (at least one must stay). Load the plan onto the architecture it was made from."
            )
        cuts = attention.cuts(block, list(step.removed))
        for layer, dim, removed in cuts:
            rows = attention.out_rows(layer)
            tracker.cut(surgery.names[layer], dim, rows.shape[0 if dim == "out" else 1], removed)
        with registry.plain_weights(layer for layer, _, _ in cuts):
            attention.remove_units(block, list(step.removed))

    def exact(self, traced, step: Step) -> bool:
        # Heads are independent (head_dim kept); a block reshaped to its input width (FSMT) runs
        # only with the hidden width cut too, so it is cut with the shape-only cuts.
        probe = traced.seen.get(input_width_heads.Probe) if traced.seen is not None else None
        return probe is None or step.layer not in probe.tied

    def readouts(self, traced, step: Step) -> list[tuple[nn.Module, list[int]]]:
        block = self._block({b.name: b for b in traced.blocks}, step)
        out, _, columns = attention.cuts(block, list(step.removed))[-1]
        return [(out, list(columns))]

    def touched(self, traced, step: Step) -> tuple[str, ...]:
        block = next((b for b in traced.blocks if b.name == step.layer), None)
        return (step.layer, *([traced.names[m] for m in (block.q, block.k, block.v, block.out)] if block else []))

    # Uniform widths: the candidate is an `attention.AttentionBlock`.
    def name_of(self, block) -> str:
        return block.name

    def size(self, block) -> int:
        return block.units

    def whole(self, block) -> bool:
        return bool(block.locked) or block.units <= 1

    def count(self, traced, block, step: Step) -> int:
        return len(step.removed)

    def lowest(self, traced, block, dim: str, n: int, p: int) -> Step:
        return self.step(block.name, _lowest(attention.unit_scores(block, p), n), partner=traced.names[block.out])


class HeadDimCut(CutKind):
    op = "head_dims"
    dims = ("head_dims",)

    def apply(self, step: Step, surgery, tracker) -> None:
        block = tied_attention.as_tied(step.layer, surgery.get(step.layer, step), cut=True)
        if block is None:
            raise PlanMismatchError(f"the plan cuts head dims of {step.layer!r}, which is no such attention block")
        cuts = tied_attention.cuts(block, list(step.removed))
        for layer, dim, removed in cuts:
            tracker.cut(surgery.names[layer], dim, tied_attention.size(layer, dim), removed)
        with registry.plain_weights(layer for layer, _, _ in cuts):
            tied_attention.cut_dims(block, list(step.removed))

    def exact(self, traced, step: Step) -> bool:
        return False  # narrower heads rescale q·k (layers/tied_attention.py): not plain masking

    def readouts(self, traced, step: Step) -> list[tuple[nn.Module, list[int]]]:
        return []  # never checked exactly: cut on both sides of the comparison


class ExpertCut(CutKind):
    op = "experts"
    dims = ("experts",)

    def apply(self, step: Step, surgery, tracker) -> None:
        experts = surgery.get(step.layer, step)
        if not hf_moe.cuttable(experts):
            raise PlanMismatchError(f"the plan cuts the experts of {step.layer!r}, which holds no stacked experts "
                                    "shrink can cut. Load the plan onto the architecture it was made from.")
        size = int(experts.down_proj.shape[0]) * hf_moe.width(experts)
        try:
            hf_moe.per_expert(experts, step.removed)
        except ValueError as exc:
            raise PlanMismatchError(f"the plan's cut of the experts of {step.layer!r} does not fit: {exc}. "
                                    "Load the plan onto the architecture it was made from.") from exc
        shared = self._shared(surgery.model, step)  # before the cut: it reads the routed experts' width
        tracker.cut(step.layer, "experts", size, step.removed)
        hf_moe.cut(experts, step.removed)
        if shared is not None:  # the shared experts' width the config derives from the routed experts'
            mlp, removed = shared
            tracker.cut(surgery.name_of(mlp.down_proj), "in", mlp.down_proj.in_features, removed)
            for layer in (mlp.gate_proj, mlp.up_proj):
                tracker.cut(surgery.name_of(layer), "out", layer.out_features, removed)
            hf_moe.cut_shared(mlp, removed)

    @staticmethod
    def _shared(model: nn.Module, step: Step, p: int = 1):
        """(shared MLP, its units to remove) where it must lose ``n_shared`` x the count per expert."""
        found = hf_moe.shared_mlp(model, step.layer)
        if found is None:
            return None
        mlp, n = found
        experts = model.get_submodule(step.layer)
        per = len(step.removed) // int(experts.down_proj.shape[0])
        return mlp, hf_moe.shared_units(mlp, n * per, p)

    def exact(self, traced, step: Step) -> bool:
        return True  # an expert's unit is one column of its down projection

    def readouts(self, traced, step: Step) -> list[tuple[nn.Module, list[int]]]:
        # zeroed inside the experts' stacked weights (verify.zeroed_readouts), and the shared MLP's columns
        found = [(traced.model.get_submodule(step.layer), list(step.removed))]
        shared = self._shared(traced.model, step)
        if shared is not None:
            found.append((shared[0].down_proj, shared[1]))
        return found


def _lowest(scores: torch.Tensor, n: int) -> tuple[int, ...]:
    order = torch.argsort(scores, stable=True)
    return tuple(sorted(order[:n].tolist()))


GROUP, HEADS, HEAD_DIMS, EXPERTS = GroupCut(), HeadCut(), HeadDimCut(), ExpertCut()
KINDS: Mapping[str, CutKind] = MappingProxyType({k.op: k for k in (GROUP, HEADS, HEAD_DIMS, EXPERTS)})


def of(op: str) -> CutKind:
    """The kind a plan's ``op`` names."""
    kind = KINDS.get(op)
    if kind is None:
        raise PlanMismatchError(f"unknown plan step {op!r} (this shrink knows {sorted(KINDS)}); "
                                "the plan was written by another version of shrink")
    return kind


def _with_tied(dg, group, removed: list[int]) -> list:
    """``group`` and the groups a tensor tied to it makes lose the same indices (graph.tied_elsewhere)."""
    groups, reached = [group], {(item.dep.target.module, dg.is_out_channel_pruning_fn(item.dep.handler))
                                for item in group}
    for module, is_out in tied_elsewhere(dg, group):
        if (module, is_out) in reached:
            continue
        pruner = dg.get_pruner_of_module(module)
        other = dg.get_pruning_group(module, pruner.prune_out_channels if is_out else pruner.prune_in_channels, removed)
        reached |= {(item.dep.target.module, dg.is_out_channel_pruning_fn(item.dep.handler)) for item in other}
        groups.append(other)
    return groups


def _cut_group(group, surgery, tracker) -> None:
    """Cut one torch-pruning group, recording the kept indices of every layer it narrows."""
    dg, extra = surgery.dg, []
    for item in group:
        target = item.dep.target.module
        name = surgery.name_of(target)
        if name is None:
            continue  # an operation (add, reshape...), nothing stored
        is_out = dg.is_out_channel_pruning_fn(item.dep.handler)
        if isinstance(target, nn.Parameter):  # torch-pruning keeps a bare parameter's dim on its node
            now = target.shape[item.dep.target.pruning_dim]
        else:
            target_pruner = dg.get_pruner_of_module(target)
            now = target_pruner.get_out_channels(target) if is_out else target_pruner.get_in_channels(target)
        if now is None:
            continue  # nothing stored per channel (a PReLU with one slope for all channels)
        tracker.cut(name, "out" if is_out else "in", int(now), item.idxs)
        if is_out and isinstance(target, nn.Module) and registry.extra_rows(target, int(now)):
            extra.append((target, int(now), list(item.idxs)))
    with registry.plain_weights(item.dep.target.module for item in group):  # weight norm and the like
        for item in group:  # one layer at a time, each cut-away weight freed before the next is cut
            single = type(group)()
            single._DG = group._DG
            single.add_dep(item.dep, item.idxs)
            single.prune(record_history=False)
            if surgery.replaced is not None:
                surgery.replaced.changed(item.dep.target.module)
    for target, width, removed in extra:  # per-channel tensors torch-pruning does not know (NFNet's gain)
        _cut_rows(target, registry.extra_rows(target, width), width, removed)


def _cut_rows(module: nn.Module, names: list[str], width: int, removed) -> None:
    """Narrow ``module``'s tensors ``names`` along dim 0 from ``width`` rows, without ``removed``."""
    drop = {int(i) for i in removed}
    keep = torch.tensor([i for i in range(width) if i not in drop], dtype=torch.long)
    for name in names:
        tensor = getattr(module, name)
        kept = tensor.data.index_select(0, keep.to(tensor.device)).clone()
        if isinstance(tensor, nn.Parameter):
            setattr(module, name, nn.Parameter(kept, requires_grad=tensor.requires_grad))
        else:
            module._buffers[name] = kept
