"""Tracing: which layers are coupled, which groups can be narrowed, and which layers stay whole.

torch-pruning's DependencyGraph does the tracing. shrink adds what it leaves to its users:
output protection (a group whose channels reach a model output is never narrowed, whatever layer
produces it), input protection (a group added to a model input cannot be narrowed either),
``ignore=``, and attention blocks, which are cut by whole heads (see attention.py).
"""

from __future__ import annotations

import contextlib

import difflib
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from .._util import checks
from .._util import inputs as _inputs
from ..layers import hf_moe, registry, tied_attention
from ..layers.rows import is_hf_conv1d, is_linear_like
from ..layers.attention import AttentionBlock, find_blocks
from ..errors import ShrinkTypeError, ShrinkValueError, UnsupportedLayerError
from . import opaque as _boxes
from . import dead as _dead
from .grouping import Graph
from .opaque import failing_nodes, opaque, recording_owners

_OPS = tp.ops
_ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM, nn.Embedding)
MAX_PASSES = 64  # traces of one model, each with the black boxes the previous ones found (the time budget still holds)


@dataclass(frozen=True)
class Member:
    """One layer a group narrows: its qualified name, and ``dim``: "out" (its outputs) or "in" (its inputs)."""

    name: str
    dim: str

    def __str__(self) -> str:
        return f"{self.name} ({self.dim})"


@dataclass
class Group:
    """A set of coupled channels, as traced (internal; `GroupInfo` is its public summary)."""

    root: nn.Module
    root_name: str
    pruning_fn: object
    tp_group: object
    width: int
    channel_groups: int
    kinds: tuple[str, ...]
    parts: tuple[Member, ...]
    protected: str | None = None
    followers: tuple[Group, ...] = ()  # groups cut with this one's indices: a tensor tied between them

    @property
    def members(self) -> tuple[str, ...]:
        """The parts as shown to users: ``"name (out)"``."""
        return tuple(str(m) for m in self.parts)

    def has(self, name: str, dim: str) -> bool:
        return Member(name, dim) in self.parts

    def producers(self) -> set[str]:
        """Layers whose outputs are this group's channels, and its root."""
        return {m.name for m in self.parts if m.dim == "out"} | {self.root_name}


@dataclass
class Traced:
    """A traced model: its graph, groups, attention blocks and the layers kept whole, with reasons."""

    model: nn.Module
    dg: tp.DependencyGraph
    names: dict[nn.Module, str]
    groups: list[Group]
    blocks: list[AttentionBlock]
    kept: dict[str, str] = field(default_factory=dict)
    opaque: dict[str, str] = field(default_factory=dict)
    tied: list[tied_attention.TiedBlock] = field(default_factory=list)
    checked: dict[str, bool] = field(default_factory=dict)  # step label -> checked exactly (verify.py)
    seen: registry.Seen | None = None  # what the layer families noted while tracing (layers/registry.py)
    # {group root: scores} ranked elsewhere, used instead of the weights here (importance.group_scores)
    known_scores: dict[str, torch.Tensor] = field(default_factory=dict)

    def kept_groups(self) -> dict[str, str]:
        """Groups and attention blocks kept whole by the trace, by root or block name, with the reason."""
        kept = {g.root_name: g.protected for g in self.groups if g.protected is not None}
        kept.update({b.name: "a single head (or key/value group)" for b in self.blocks if b.units <= 1})
        kept.update({b.name: f"heads kept whole: {b.locked}" for b in self.blocks if getattr(b, "locked", "")})
        return kept


def ignore_names(model: nn.Module, ignore: Iterable) -> list[str]:
    """``ignore`` as sorted qualified names (for plans and reports)."""
    names = {m: n for n, m in model.named_modules()}
    items = checks.ignore_list(ignore)
    return sorted(names.get(i, type(i).__name__) if isinstance(i, nn.Module) else str(i) for i in items)


def resolve_ignore(model: nn.Module, ignore: Iterable) -> set[nn.Module]:
    """Modules named or given in ``ignore``, with all their submodules."""
    ignore = checks.ignore_list(ignore)
    by_name = dict(model.named_modules())
    ignored: set[nn.Module] = set()
    for item in ignore:
        if isinstance(item, str):
            if item not in by_name:
                close = difflib.get_close_matches(item, [n for n in by_name if n], n=3)
                hint = f" Did you mean {', '.join(repr(c) for c in sorted(close))}?" if close else ""
                raise ShrinkValueError(f"ignore={item!r} names no module of the model.{hint}")
            item = by_name[item]
        if not isinstance(item, nn.Module):
            raise ShrinkTypeError(
                f"ignore= takes modules or qualified names (str); got {type(item).__name__}"
            )
        ignored.update(item.modules())
    return ignored


def trace(model: nn.Module, example_inputs, *, ignore: Iterable = (), outputs=None,
          timeout: float | None = 180.0, black_boxes: dict[str, str] | None = None) -> Traced:
    """Trace ``model`` on ``example_inputs`` and classify every group of coupled channels.

    A module whose inside torch-pruning cannot trace (it raises, or runs past the time budget) is
    traced as a black box (see opaque.py) and the rest of the model is traced around it; groups
    that touch it are kept whole, with the error as the reason.

    Args:
        outputs: the model's outputs on these inputs, when the caller already ran it.
        timeout: seconds tracing may take in all (None: no limit). Enforced in the main thread.
        black_boxes: module name -> reason, the black boxes an earlier trace of the same model
            found (``Traced.opaque``): traced as such from the first pass, which then need not
            fail again to find them (healing re-traces fresh copies many times).

    Raises:
        UnsupportedLayerError: tracing fails even with the failing modules as black boxes, or
            runs out of time; the message names the module to keep whole.
    """
    if not isinstance(model, nn.Module):
        raise ShrinkTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    checks.eager(model)
    ignored = resolve_ignore(model, ignore) | hf_moe.kept_whole(model)
    # Bare parameters (an RMSNorm's scale, a router's weight) are traced on their own: they count too.
    ignored |= {p for m in list(ignored) for p in m.parameters(recurse=False)}
    if outputs is None:
        with torch.no_grad():
            outputs = _inputs.run(model, example_inputs)
    if not _inputs.flatten_outputs(outputs):
        raise ShrinkValueError("the model returned no tensors; shrink needs tensor outputs to protect them")
    names = {m: n for n, m in model.named_modules()}
    # A black box needs inputs and outputs: never the whole model, never a layer the graph cuts by rows.
    parents = {m: p for p in model.modules() for m in p.children()}
    known = dict(black_boxes or {})
    black_boxes = {m: known[n] for m, n in names.items() if n in known and m is not model}
    deadline = None if timeout is None else time.monotonic() + timeout
    for _ in range(MAX_PASSES):
        # The first try gets most of the budget; what a slow part leaves goes to the retries.
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        budget = left if left is None or black_boxes else 0.7 * left
        try:
            traced = _trace_once(model, example_inputs, ignored, outputs, black_boxes, budget)
        except _boxes.TraceFailure as failure:
            found = {}
            for error, suspects in [(failure.error, failure.suspects), *failure.others]:
                box = _boxes.black_box_for(suspects, parents, model, black_boxes)
                if box is not None and box not in found:
                    found[box] = ("tracing took longer than its budget inside it"
                                  if isinstance(error, _boxes.TraceTimeout)
                                  else f"{type(error).__name__}: {_boxes.short(error)}")
            suspect = next(iter(found), None)
            if suspect is None or (deadline is not None and time.monotonic() >= deadline):
                raise _boxes.trace_error(failure, suspect, names, timeout) from failure.error
            black_boxes.update(found)
            continue
        traced.opaque = {names[m]: reason for m, reason in black_boxes.items()}
        _boxes.add_black_box_reasons(traced)
        return traced
    raise UnsupportedLayerError(f"tracing kept failing in new places after {MAX_PASSES} passes; "
                                "keep the failing blocks whole with ignore=[...]")


def _keeping_no_tensors():
    """The traced graph keeps no tensor alive: it is walked, never run backwards.

    Autograd would otherwise save every activation and, by reference, every weight a layer reads;
    the graph outlives the cut, so the cut-away weights would stay in memory beside the new ones.
    What the walk reads off the graph (sizes, dims of reshapes and splits) is saved as plain values.
    """
    return torch.autograd.graph.saved_tensors_hooks(lambda _tensor: None, _never_unpacked)


@contextlib.contextmanager
def _all_trainable(model: nn.Module):
    """Frozen parameters require grad while tracing: the graph only reaches layers through tensors that
    require grad, and a frozen embedding (a fine-tuned head on a frozen backbone) would cut it off."""
    frozen = [p for p in model.parameters() if not p.requires_grad and p.is_floating_point()]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _never_unpacked(_packed):
    raise RuntimeError("shrink's traced graph cannot be run backwards")


def _trace_once(model, example_inputs, ignored, outputs, black_boxes, budget) -> Traced:
    # Float inputs require grad while tracing so that the graph shows where they are added in.
    args, kwargs = _inputs.call_args(_inputs.requiring_grad(example_inputs))
    input_ids = {id(t) for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor) and t.requires_grad}
    output_fns: set = set()
    dead_fns: set = set()  # the ends of dead branches, traced as outputs that protect nothing (dead.py)

    fixed: dict[nn.Module, str] = {}  # modules whose width the caller sees (layers/registry.py)

    def capture(out):
        # Every output is traced (a pooler beside the logits must be cut with the width it reads);
        # only the task outputs keep their width (a task model's hidden states follow the config).
        found = _inputs.flatten_outputs(out)
        task = _inputs.task_outputs(found)
        output_fns.update(t.grad_fn for t in task.values() if t.grad_fn is not None)
        fixed.update(seen.fixed(list(task.values())))
        ends = _dead.sinks(owners.unread, found.values())
        dead_fns.update(t.grad_fn for t in ends)
        return list(found.values()) + ends

    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    names = {m: n for n, m in model.named_modules()}
    owners = None
    try:
        if use_cache:  # a KV cache concatenates past and present keys: not part of the network to cut
            config.use_cache = False
        with opaque(list(black_boxes)) as box_pruners, recording_owners(model) as owners, \
                _boxes.time_limit(budget), torch.enable_grad(), _keeping_no_tensors(), _all_trainable(model), \
                warnings.catch_warnings(), _inputs.evaluating(model):
            warnings.simplefilter("ignore")
            customized = registry.pruners(model)
            root_types = _ROOT_TYPES + tuple(customized)
            customized.update(box_pruners)

            def forward(m, _):
                with owners:
                    return m(*args, **kwargs)

            # The families' probes (layers/registry.py) finish when this block closes, before blocks are found.
            with registry.watching(model) as seen:
                dg = Graph().build_dependency(
                    model,
                    example_inputs=example_inputs,
                    forward_fn=forward,
                    output_transform=capture,
                    customized_pruners=customized or None,
                    verbose=False,
                )
            dg.set_concat_sizes(owners.cat_sizes, owners.cat_last)
            dg.view_shapes = owners.view_shapes
            probe = seen.get(tied_attention.Probe)
            tied = probe.tied() if probe is not None else tied_attention.find(model)
            blocks = [b for b in find_blocks(model, tied={b.module for b in tied})
                      if b.module not in ignored and b.module not in black_boxes]
            for block in blocks:
                block.out = _output_projection(dg, block)
            blocks = [b for b in blocks if b.out is not None and b.out not in ignored]
            traced = Traced(model, dg, names, [], blocks, seen=seen)
            # Heads are cut by shrink inside each block, so q/k/v never root a torch-pruning group
            # (expanding that group through rotary embeddings' slices is also very slow).
            head_layers = [layer for b in blocks for layer in b.producers()] + seen.owned()
            traced.tied = [b for b in tied if b.module not in ignored]
            for tp_group in dg.get_all_groups(ignored_layers=head_layers, root_module_types=root_types):
                traced.groups.append(_classify(dg, names, tp_group, output_fns, input_ids, ignored, fixed,
                                               black_boxes, seen.parts, dead_fns))
            if dg.oversized:  # the oversized walks of this pass at once: each names a layer to trace as a black box
                found = [(e, failing_nodes(e)) for e in dg.oversized]
                # A walk blamed on a reshape that no module ran is left for the next pass: the boxes
                # the others name often end it (HaloNet's kv walks end with the attention boxed).
                owned = [(e, nodes) for e, nodes in found if nodes and _nearest_owner(nodes[0], owners) is not None]
                raise _boxes.TraceFailure(dg.oversized[0], [], others=[
                    (e, _suspects(nodes, owners)) for e, nodes in (owned or found)])
            for group in traced.groups:  # analyze shows that these widths also narrow every head (tied_attention.py)
                if any(group.has(names[b.qkv], "in") for b in traced.tied):
                    group.kinds = tuple(sorted({*group.kinds, "attention head dims"}))
            _link_tied(dg, traced.groups)
            traced.kept = _kept_whole(model, traced, ignored)
    except (ShrinkValueError, KeyboardInterrupt):
        raise
    except _boxes.TraceFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - torch-pruning raises many kinds
        raise _boxes.TraceFailure(exc, _suspects(failing_nodes(exc), owners)) from exc
    finally:
        if use_cache:
            config.use_cache = use_cache
    return traced


def _suspects(nodes, owners) -> list[nn.Module]:
    """The modules behind failing graph nodes: the module that ran the op, then the node's own."""
    suspects = []
    for node in nodes:
        owner = _nearest_owner(node, owners) if owners is not None else None
        for m in (owner, node.module):
            if isinstance(m, nn.Module) and m not in suspects:
                suspects.append(m)
    return suspects


def _nearest_owner(node, owners, depth: int = 3):
    """The module that ran ``node``'s op; for an op no module was seen running (a view that autograd
    folded away), the owner of the nearest op around it."""
    frontier, seen = [node], {node}
    for _ in range(depth + 1):
        for n in frontier:
            owner = owners.owner.get(n.grad_fn)
            if owner is not None:
                return owner
            if isinstance(n.module, nn.Module):
                return None  # a layer of its own: it is the suspect
        frontier = [m for n in frontier for m in (*n.inputs, *n.outputs) if m not in seen]
        seen.update(frontier)
    return None


def tensor_dim(module: nn.Module, is_out: bool) -> int:
    """The dim of ``module.weight`` that its output (or input) channels index."""
    stored_in_out = isinstance(module, nn.Embedding) or is_hf_conv1d(module)  # [in, out] layouts
    return (1 if is_out else 0) if stored_in_out else (0 if is_out else 1)


def _weight(module) -> torch.Tensor | None:
    weight = getattr(module, "weight", None) if isinstance(module, nn.Module) else None
    return weight if isinstance(weight, torch.Tensor) and weight.dim() >= 2 else None


def tied_elsewhere(dg, tp_group) -> list[tuple[nn.Module, bool]]:
    """Layers outside ``tp_group`` that hold one of its weights and narrow it along the same dim,
    as (layer, whether by its outputs): a tied tensor is cut once, so their channels go with
    this group's (BERT's masked-LM decoder reads the word embeddings' columns; BART's encoder,
    decoder and LM head share one table)."""
    mine, dims = set(), set()
    alive = []  # a computed weight (weight norm) is a new tensor per access: held, so no id is reused
    for dep, _ in tp_group:
        module, weight = dep.target.module, _weight(dep.target.module)
        if weight is not None:
            alive.append(weight)
            mine.add(module)
            dims.add((id(weight), tensor_dim(module, dg.is_out_channel_pruning_fn(dep.handler))))
    found = []
    for module in dg.module2node:
        weight = _weight(module)
        alive.append(weight)
        if weight is None or module in mine:
            continue
        found += [(module, is_out) for is_out in (True, False) if (id(weight), tensor_dim(module, is_out)) in dims]
    return found


def _link_tied(dg, groups: list[Group]) -> None:
    """Groups that narrow one tied tensor along the same dim are cut together: the largest leads,
    the others follow it with the same indices (`tied_elsewhere`) and leave the list. Where their
    widths differ they stay whole. (GPT-2's tied head is one group: embedding and head share its width.)"""
    where = {}  # (layer, by outputs) -> index of its group
    for gi, group in enumerate(groups):
        for dep, _ in group.tp_group:
            if isinstance(dep.target.module, nn.Module):
                where.setdefault((dep.target.module, dg.is_out_channel_pruning_fn(dep.handler)), gi)
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for gi, group in enumerate(groups):
        for place in tied_elsewhere(dg, group.tp_group):
            other = where.get(place)
            if other is not None:
                parent[root(other)] = root(gi)
    linked: dict[int, list[int]] = defaultdict(list)
    for gi in range(len(groups)):
        linked[root(gi)].append(gi)
    gone = set()
    for members in linked.values():
        if len(members) < 2:
            continue
        tied = [groups[gi] for gi in members]
        if len({g.width for g in tied}) > 1 or any(g.channel_groups != 1 for g in tied):
            for g in tied:
                g.protected = g.protected or "a weight tied with another group of another width (shared embeddings)"
            continue
        leader = max(tied, key=lambda g: (g.protected is None, len(g.parts)))
        leader.followers = tuple(g for g in tied if g is not leader)
        leader.protected = leader.protected or next((g.protected for g in leader.followers if g.protected), None)
        gone.update(id(g) for g in leader.followers)
    groups[:] = [g for g in groups if id(g) not in gone]


def _output_projection(dg, block: AttentionBlock) -> nn.Module | None:
    """The first layer with weights downstream of v: it reads the concatenated heads."""
    start = dg.module2node.get(block.v)
    if start is None:
        return None
    queue, seen = list(start.outputs), {start}
    while queue:
        node = queue.pop(0)
        if node in seen:
            continue
        seen.add(node)
        module = node.module
        if isinstance(module, nn.Module) and is_linear_like(module):
            width = block.num_heads * block.head_dim
            return module if _in_width(module) == width else None
        queue.extend(node.outputs)
    return None


def _in_width(layer: nn.Module) -> int:
    return layer.weight.shape[0] if is_hf_conv1d(layer) else layer.in_features


def _classify(dg, names, tp_group, output_fns, input_ids, ignored, fixed, black_boxes=(), parts=None,
              dead_fns=frozenset()) -> Group:
    root_dep = tp_group[0].dep
    root = root_dep.target.module
    members, kinds, protected, channel_groups = [], set(), None, 1
    for dep, _ in tp_group:
        node, module = dep.target, dep.target.module
        is_out = dg.is_out_channel_pruning_fn(dep.handler)
        if isinstance(module, nn.Module) and names.get(module) is not None:
            members.append(Member(names[module], "out" if is_out else "in"))
        # A dead branch's end is traced as an output so that its inputs are cut; it protects nothing.
        if (isinstance(module, _OPS._OutputOp) and node.grad_fn not in dead_fns) or (is_out and node.grad_fn in output_fns):
            protected = protected or "model output"
        if isinstance(module, (nn.Module, nn.Parameter)) and module in ignored:
            protected = protected or "ignored"
        if isinstance(module, nn.Module) and module in black_boxes:
            protected = protected or f"{'written' if is_out else 'read'} by {names.get(module)!r}, traced as a black box"
        if (is_out and isinstance(module, nn.Module) and module in fixed) or node.grad_fn in fixed:
            protected = protected or fixed.get(module if module in fixed else node.grad_fn)
        kinds.update(_kinds_of(node, module))
        mixed = _mixes_model_input(node, input_ids)
        if mixed:
            protected = protected or f"combined with a model input ({mixed})"
        channel_groups = math.lcm(channel_groups, _channel_groups(dg, module, is_out, parts))
    width = dg.get_out_channels(root) if dg.is_out_channel_pruning_fn(root_dep.handler) else dg.get_in_channels(root)
    return Group(
        root=root,
        root_name=names.get(root, "?"),
        pruning_fn=root_dep.handler,
        tp_group=tp_group,
        width=int(width),
        channel_groups=channel_groups,
        kinds=tuple(sorted(kinds)),
        parts=tuple(members),
        protected=protected,
    )


def _kinds_of(node, module) -> set[str]:
    if isinstance(module, _OPS._ConcatOp):
        return {"concat"}
    if isinstance(module, (_OPS._SplitOp, _OPS._UnbindOp)):
        return {"split"}
    if isinstance(module, _OPS._ElementWiseOp):
        name = node.grad_fn.name() if node.grad_fn is not None else ""
        if name.startswith(("Add", "Sub")) and len(node.inputs) >= 2:
            return {"residual add"}
        return set()
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        if module.groups == module.in_channels == module.out_channels:
            return {"depthwise conv"}
        return {"grouped conv"}
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                           nn.modules.instancenorm._InstanceNorm)):
        return {"norm"}
    if isinstance(module, nn.Parameter) and module.dim() == 1:
        return {"norm"}  # RMSNorm-style scale vectors are traced as bare parameters
    if isinstance(module, nn.MultiheadAttention):
        return {"attention (per-head dims)"}
    if isinstance(module, nn.Embedding):
        return {"embedding"}
    return set()


def _mixes_model_input(node, input_ids: set[int]) -> str | None:
    """An add/mul/... one of whose operands is a model input: that width is the input's, fixed."""
    if not isinstance(node.module, _OPS._ElementWiseOp) or node.grad_fn is None:
        return None
    for fn, _ in node.grad_fn.next_functions:
        if fn is not None and fn.name().endswith("AccumulateGrad") and id(fn.variable) in input_ids:
            return node.grad_fn.name()
    return None


def _channel_groups(dg, module, is_out: bool, parts=None) -> int:
    """Channels must be removed evenly across these groups (grouped convs, GroupNorm, MHA heads);
    ``parts(module)``: the equal parts a family splits a layer's outputs into (registry.Seen.parts)."""
    if isinstance(module, nn.MultiheadAttention):
        return module.num_heads
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels:
        return 1  # depthwise: every channel is its own group
    if not isinstance(module, nn.Module):
        return 1
    if is_out and parts is not None and parts(module) > 1:  # split in equal parts by a stored size (layers/csp.py)
        return parts(module)
    pruner = dg.get_pruner_of_module(module)
    if pruner is None:
        return 1
    n = pruner.get_out_channel_groups(module) if is_out else pruner.get_in_channel_groups(module)
    return int(n or 1)


def _kept_whole(model: nn.Module, traced: Traced, ignored: set) -> dict[str, str]:
    """Every layer with weights whose outputs no prunable group narrows, with the reason."""
    dg = traced.dg
    by_name = dict(model.named_modules())
    narrowed: set[nn.Module] = set()
    reasons: dict[nn.Module, str] = {}
    for group in traced.groups:
        for dep, _ in group.tp_group:
            module = dep.target.module
            if isinstance(module, nn.Parameter):  # e.g. an RMSNorm's scale: its owner is narrowed
                owner = dg._param_to_name.get(module, "").rpartition(".")[0]
                module = by_name.get(owner)
            if not isinstance(module, nn.Module) or not dg.is_out_channel_pruning_fn(dep.handler):
                continue
            if group.protected is None:
                narrowed.add(module)
            else:
                reasons.setdefault(module, group.protected)
    for block in traced.blocks:
        if block.locked:
            reasons.update({layer: f"heads kept whole: {block.locked}" for layer in block.producers()})
        elif block.units > 1:
            narrowed.update(block.producers())
    for module in list(narrowed):
        if isinstance(module, nn.MultiheadAttention):
            narrowed.add(module.out_proj)  # its pruner cuts out_proj, which forward reads as a weight
    kept = {}
    for name, module in model.named_modules():
        if not name or not _has_own_weight(module) or module in narrowed:
            continue
        if module in ignored:
            kept[name] = "ignored"
        elif module in reasons:
            kept[name] = reasons[module]
        elif module not in dg.module2node:
            kept[name] = "not traced: unsupported layer type, or unused on the example inputs"
        else:
            kept[name] = "no prunable group (its outputs feed no cut)"
    return kept


def _has_own_weight(module: nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), torch.Tensor) or isinstance(
        module, (nn.MultiheadAttention, nn.RNNBase))  # weights under other names (in_proj_weight, weight_ih_l0)
