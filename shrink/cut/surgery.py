"""Physical removal: apply a plan's cuts to a model, then fix what the cuts leave inconsistent.

`apply_steps` is the one code path that cuts: `compress` uses it on the model it ranked, and
`load` uses it to replay a saved plan on a fresh un-pruned model, so both give the same model.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable

import torch
from torch import nn

import logging

from ..layers import attention, hf_attention, hf_config, registry
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


class Surgery:
    """The model being cut, as a step's kind (kinds.py) needs it: modules by name, names by module,
    its attention blocks by name, and its dependency graph."""

    def __init__(self, model: nn.Module, dg, blocks: list[attention.AttentionBlock],
                 release: Callable[[nn.Parameter], None] | None = None) -> None:
        self.model, self.dg = model, dg
        self.modules = dict(model.named_modules())
        self.names = {m: n for n, m in self.modules.items()}
        self.blocks = {b.name: b for b in blocks}
        self.replaced = Replaced(model, release) if release is not None else None

    def get(self, name: str, step: Step) -> nn.Module:
        if name not in self.modules:
            raise PlanMismatchError(
                f"the plan cuts {name!r} ({step.op} step), but the model has no module of that name. "
                "Load the plan onto an instance of the architecture it was made from."
            )
        return self.modules[name]

    def name_of(self, item) -> str | None:
        """A module's or a bare parameter's qualified name (None for torch-pruning's operations)."""
        if isinstance(item, nn.Parameter):
            return self.dg._param_to_name.get(item)
        return self.names.get(item)


def apply_steps(model: nn.Module, dg, blocks: list[attention.AttentionBlock], steps, tracker: Tracker,
                seen: registry.Seen | None = None, release: Callable[[nn.Parameter], None] | None = None) -> None:
    """Cut ``steps`` from ``model`` (traced as ``dg``), in order, recording kept indices in ``tracker``;
    ``seen``: what the layer families noted while tracing it (``Traced.seen``); ``release``: what
    becomes of each parameter the cut replaced (`Replaced`; by default it is left as it was)."""
    surgery = Surgery(model, dg, blocks, release)
    mha_head_dims = {m: m.head_dim for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    shared = _shared_parameters(model)
    hf_before = hf_config.measure(model, blocks) if hf_config.is_hf(model) else None
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    for step in steps:
        step.kind.apply(step, surgery, tracker)
        _follow_replaced_parameters(model, dg)
        if surgery.replaced is not None:
            surgery.replaced.sweep()
    _follow_q_columns(surgery, tracker)
    for block in blocks:
        if not block.fused:
            hf_attention.restate_embed_dim(block.module, block.q)
    _rescale_mha_queries(mha_head_dims)
    _retie(shared)
    for name, p in model.named_parameters():  # a cut copy of a frozen parameter stays frozen
        if name in frozen:
            p.requires_grad_(False)
    if surgery.replaced is not None:
        surgery.replaced.sweep()
    registry.finish(model, seen)  # attributes the families' forwards read (a ViT's hidden_dim)
    if hf_before is not None:  # a Hugging Face model's config describes its new sizes
        problems = hf_config.describe(model, hf_before, blocks)
        heads = {m for b in blocks for m in b.producers()}  # cut with their block's heads, never here
        if problems and _follow_untraced(model, dg, tracker, skip=heads):
            registry.finish(model, seen)  # a norm cut that way states its new width too
            problems = hf_config.check(model)
        if problems:
            log.info("the Hugging Face config cannot describe the cut model: %s", "; ".join(problems))


def _follow_replaced_parameters(model: nn.Module, dg) -> None:
    """Point the graph's nodes for bare parameters at the narrower copies a family put in their place.

    torch-pruning does this for the parameters it cuts itself; one a family cuts (Swin's per-head
    bias table) would stay the graph's node, so the next group built after the cut (a healing
    trial's masking readouts) measured the old tensor, which may be released by then."""
    for old, name in list(dg._param_to_name.items()):
        if old not in dg.module2node:
            continue
        try:
            new = model.get_parameter(name)
        except AttributeError:  # not a registered parameter any more: nothing to follow
            continue
        if new is not old:
            dg._param_to_name[new] = dg._param_to_name.pop(old)
            dg.module2node[new] = dg.module2node.pop(old)
            dg.module2node[new].module = new


def _follow_q_columns(surgery: Surgery, tracker: Tracker) -> None:
    """Queries beside q that the forward never ran (LUKE's entity queries without entity inputs)
    read q's input: they keep the columns q kept (attention.follow_q_columns)."""
    for block in surgery.blocks.values():
        kept = tracker.kept.get(surgery.names.get(block.q), {}).get("in")
        if kept is None or not block.queries:
            continue
        for layer, removed in attention.follow_q_columns(block, kept):
            tracker.cut(surgery.names[layer], "in", attention.out_rows(layer).shape[1] + len(removed), removed)


def _follow_untraced(model: nn.Module, dg, tracker: Tracker, *, skip: set[nn.Module] = frozenset()) -> bool:
    """Cut the tensors the forward never read that the config builds at a cut width (DINOv2's and
    ViT's ``mask_token``, used only when masked positions are passed): along the one dim the
    config narrows, keeping the indices most cut layers of that width keep (the residual stream).
    Returns whether any was cut."""
    expected = hf_config.built_shapes(model)
    if not expected:
        return False
    # (width before, after) -> {kept indices: how many layers keep them}; the residual stream is the most common
    options: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for name, dims in tracker.kept.items():
        if "out" in dims:
            options[(tracker.before[name]["out"], len(dims["out"]))][tuple(dims["out"])] += 1
    done = False
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        want = expected.get(name)
        if want is None or len(want) != tensor.dim() or tuple(tensor.shape) == want:
            continue
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        if tensor in dg.module2node or module in dg.module2node or module in skip:
            continue  # traced: its cut (maybe still to come) is the graph's
        dims = [d for d in range(tensor.dim()) if want[d] != tensor.shape[d]]
        ranked = options.get((tensor.shape[dims[0]], want[dims[0]]), Counter()).most_common(2) if len(dims) == 1 else []
        if not ranked or len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
            continue  # no cut width of that size, or two as common: which indices it keeps is unknown
        kept = {ranked[0][0]}
        with torch.no_grad():
            value = tensor.index_select(dims[0], torch.tensor(next(iter(kept)), dtype=torch.long, device=tensor.device)).clone()
        if isinstance(tensor, nn.Parameter):
            setattr(module, leaf, nn.Parameter(value, requires_grad=tensor.requires_grad))
        else:
            module._buffers[leaf] = value
        done = True
    return done


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


class Replaced:
    """Lets go of each parameter a cut replaces by its narrower copy, as soon as nothing holds it.

    The traced autograd graph holds every parameter it saw (one AccumulateGrad node each) for as
    long as the trace lives, so otherwise each cut-away weight would stay in memory beside its
    copy, and one group (the residual width reaches every layer) would cost 1.5 times the model.
    ``changed(module)`` is called after each layer is cut, ``sweep()`` after each step (it sees
    what a step replaced by other means). A tensor held in two places (tied embeddings) goes when
    both have a new one. ``release(param)`` decides what the old object holds from then on
    (compress: nothing, or its values memory-mapped from disk, so that an undo still finds them).
    """

    def __init__(self, model: nn.Module, release: Callable[[nn.Parameter], None]) -> None:
        self.model, self.release = model, release
        self.places: dict[tuple[nn.Module, str], nn.Parameter] = {}
        self.holders: Counter = Counter()
        self._take(model.modules())

    def _take(self, modules) -> list[nn.Parameter]:
        gone = []
        for module in modules:
            for attr, param in module._parameters.items():
                old = self.places.get((module, attr))
                if old is param:
                    continue
                if param is not None:
                    self.places[(module, attr)] = param
                    self.holders[id(param)] += 1
                if old is not None:
                    self.holders[id(old)] -= 1
                    if self.holders[id(old)] <= 0:
                        del self.holders[id(old)]
                        gone.append(old)
        return gone

    def changed(self, module) -> None:
        if isinstance(module, nn.Module):
            for old in self._take([module]):
                self.release(old)

    def sweep(self) -> None:
        for old in self._take(self.model.modules()):
            self.release(old)


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
        for module, attr in places:  # a place outside the traced graph (T5's shared table) states its size too
            if attr == "weight":
                _sizes_from_weight(module)


def _sizes_from_weight(module: nn.Module) -> None:
    rows, cols = module.weight.shape[:2]
    if isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = rows, cols
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = rows, cols
