"""Physical removal: apply a plan's cuts to a model, then fix what the cuts leave inconsistent.

`apply_steps` is the one code path that cuts: `compress` uses it on the model it ranked, and
`load` uses it to replay a saved plan on a fresh un-pruned model, so both give the same model.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

import logging

from ..layers import attention, hf_config, hf_moe, parametrized, registry, std_conv, tied_attention
from ..errors import PlanMismatchError
from .plan import Step

log = logging.getLogger(__name__)


class Tracker:
    """Original indices each layer keeps along each narrowed dimension."""

    def __init__(self) -> None:
        self.kept: dict[str, dict[str, list[int]]] = defaultdict(dict)
        self.before: dict[str, dict[str, int]] = defaultdict(dict)

    def cut(self, name: str, dim: str, size_now: int, removed) -> None:
        if dim not in self.kept[name]:
            self.kept[name][dim] = list(range(size_now))
            self.before[name][dim] = size_now
        drop = set(int(i) for i in removed)
        self.kept[name][dim] = [k for pos, k in enumerate(self.kept[name][dim]) if pos not in drop]

    def widths(self) -> dict[str, dict[str, list[int]]]:
        return {
            name: {dim: [self.before[name][dim], len(kept)] for dim, kept in dims.items()}
            for name, dims in sorted(self.kept.items())
        }


def _get(modules: dict[str, nn.Module], name: str, step: Step) -> nn.Module:
    if name not in modules:
        raise PlanMismatchError(
            f"the plan cuts {name!r} ({step.op} step), but the model has no module of that name. "
            "Load the plan onto an instance of the architecture it was made from."
        )
    return modules[name]


def _item_name(dg, names: dict, module) -> str | None:
    if isinstance(module, nn.Parameter):
        return dg._param_to_name.get(module)
    return names.get(module)


def apply_steps(model: nn.Module, dg, blocks: list[attention.AttentionBlock], steps, tracker: Tracker) -> None:
    """Cut ``steps`` from ``model`` (traced as ``dg``), in order, recording kept indices in ``tracker``."""
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    blocks_by_name = {b.name: b for b in blocks}
    mha_head_dims = {m: m.head_dim for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    shared = _shared_parameters(model)
    hf_before = hf_config.measure(model, blocks) if hf_config.is_hf(model) else None
    for step in steps:
        if step.op == "group":
            _cut_group(dg, names, _get(modules, step.layer, step), step, tracker)
        elif step.op == "heads":
            block = blocks_by_name.get(step.layer)
            if block is None:
                raise PlanMismatchError(f"the plan cuts heads of {step.layer!r}, which is no attention block here")
            block.out = _get(modules, step.partner, step)
            if step.removed and (max(step.removed) >= block.units or len(step.removed) >= block.units):
                raise PlanMismatchError(
                    f"the plan removes heads {sorted(step.removed)} of {step.layer!r}, which has {block.units} "
                    "here (at least one must stay). Load the plan onto the architecture it was made from."
                )
            cuts = attention.cuts(block, list(step.removed))
            for layer, dim, removed in cuts:
                rows = attention.out_rows(layer)
                tracker.cut(names[layer], dim, rows.shape[0 if dim == "out" else 1], removed)
            with parametrized.plain_weights(layer for layer, _, _ in cuts):
                attention.remove_units(block, list(step.removed))
        elif step.op == "head_dims":
            block = tied_attention.as_tied(step.layer, _get(modules, step.layer, step), cut=True)
            if block is None:
                raise PlanMismatchError(f"the plan cuts head dims of {step.layer!r}, which is no such attention block")
            cuts = tied_attention.cuts(block, list(step.removed))
            for layer, dim, removed in cuts:
                tracker.cut(names[layer], dim, tied_attention.size(layer, dim), removed)
            with parametrized.plain_weights(layer for layer, _, _ in cuts):
                tied_attention.cut_dims(block, list(step.removed))
        elif step.op == "experts":
            _cut_experts(_get(modules, step.layer, step), step, tracker)
        else:
            raise PlanMismatchError(f"unknown plan step {step.op!r}; the plan was written by a newer shrink")
    _rescale_mha_queries(mha_head_dims)
    _retie(shared)
    registry.finish(model)  # attributes the families' forwards read (a ViT's hidden_dim)
    if hf_before is not None:  # a Hugging Face model's config describes its new sizes
        problems = hf_config.describe(model, hf_before, blocks)
        if problems:
            log.info("the Hugging Face config cannot describe the cut model: %s", "; ".join(problems))


def _cut_group(dg, names: dict, module: nn.Module, step: Step, tracker: Tracker) -> None:
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
    group = dg.get_pruning_group(module, fn, list(step.removed))
    extra = []
    for item in group:
        target = item.dep.target.module
        name = _item_name(dg, names, target)
        if name is None:
            continue  # an operation (add, reshape...), nothing stored
        is_out = dg.is_out_channel_pruning_fn(item.dep.handler)
        if isinstance(target, nn.Parameter):  # torch-pruning keeps a bare parameter's dim on its node
            now = target.shape[item.dep.target.pruning_dim]
        else:
            target_pruner = dg.get_pruner_of_module(target)
            now = target_pruner.get_out_channels(target) if is_out else target_pruner.get_in_channels(target)
        tracker.cut(name, "out" if is_out else "in", int(now), item.idxs)
        if is_out and std_conv.extra_rows(target):
            extra.append((target, int(now), list(item.idxs)))
    with parametrized.plain_weights(item.dep.target.module for item in group):  # weight norm and the like
        group.prune(record_history=False)
    for target, width, removed in extra:  # per-channel tensors torch-pruning does not know (NFNet's gain)
        std_conv.cut_rows(target, width, removed)


def _cut_experts(experts: nn.Module, step: Step, tracker: Tracker) -> None:
    """Every expert of a mixture-of-experts block loses the same FFN units (layers/hf_moe.py)."""
    if not hf_moe.cuttable(experts):
        raise PlanMismatchError(f"the plan cuts the experts of {step.layer!r}, which holds no stacked experts "
                                "shrink can cut. Load the plan onto the architecture it was made from.")
    size = int(experts.down_proj.shape[0]) * hf_moe.width(experts)
    try:
        hf_moe.per_expert(experts, step.removed)
    except ValueError as exc:
        raise PlanMismatchError(f"the plan's cut of the experts of {step.layer!r} does not fit: {exc}. "
                                "Load the plan onto the architecture it was made from.") from exc
    tracker.cut(step.layer, "experts", size, step.removed)
    hf_moe.cut(experts, step.removed)


def _rescale_mha_queries(head_dims: dict[nn.MultiheadAttention, int]) -> None:
    """Keep q·k/sqrt(head_dim) exact in nn.MultiheadAttention after its head_dim shrank.

    nn.MultiheadAttention ties its heads to the residual width, so cutting that width cuts the
    same positions in every head and lowers head_dim; scaling the query rows by
    sqrt(new/old) keeps every attention score what it was with those dims masked to zero.
    """
    for mha, old in head_dims.items():
        if mha.head_dim == old:
            continue
        scale = math.sqrt(mha.head_dim / old)
        e = mha.embed_dim
        with torch.no_grad():
            if mha.in_proj_weight is not None:
                mha.in_proj_weight[:e] *= scale
            else:
                mha.q_proj_weight *= scale
            if mha.in_proj_bias is not None:
                mha.in_proj_bias[:e] *= scale


def _shared_parameters(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """Places holding one shared tensor (tied embeddings and LM heads), each list one tensor."""
    seen: dict[int, list[tuple[nn.Module, str]]] = defaultdict(list)
    for module in model.modules():
        for attr, param in module.named_parameters(recurse=False):
            seen[id(param)].append((module, attr))
    return [places for places in seen.values() if len(places) > 1]


def _retie(shared: list[list[tuple[nn.Module, str]]]) -> None:
    """Cutting a tied tensor in two places makes two copies; make them one tensor again."""
    for places in shared:
        params = [getattr(m, a) for m, a in places]
        first = params[0]
        if all(p is first for p in params):
            continue
        if any(p.shape != first.shape or not torch.equal(p, first) for p in params):
            raise PlanMismatchError(
                "a tensor shared by "
                + ", ".join(sorted(f"{type(m).__name__}.{a}" for m, a in places))
                + " was cut differently in its places; keep one of its layers whole with ignore="
            )
        for module, attr in places[1:]:
            setattr(module, attr, first)
