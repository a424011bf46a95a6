"""Group expansion that visits each channel once.

torch-pruning grows a group by walking the graph from the root's channels, mapping the channel
indices through every concat, split, slice and flatten on the way. It re-walks a layer whenever it
reaches it with a list of indices that differs from every list it brought there before; where paths
fork and join over slices (ReXNet's partial residual ``x[:, :c] += shortcut``), flattens (attention
that reshapes heads into spatial maps) and concats, the lists differ on every path, and the walk
grows exponentially: ReXNet-1.0 spent 90 s on its first three groups, each of ~10,000 items, and
ten timm families did not finish tracing in three minutes.

Every index mapping maps each index on its own (shift, filter, expand by a stride, divide by it),
so walking only the indices that a (layer, pruning function) pair has not seen yet reaches the same
union of channels. `Graph.get_pruning_group` does that and returns the merged group that
torch-pruning would: one item per (layer, pruning function), indices in the order first reached.
"""

from __future__ import annotations

from contextlib import contextmanager
from numbers import Number

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import _helpers, ops
from torch_pruning.dependency import index_mapping, shape_infer
from torch_pruning.dependency.dependency import Dependency
from torch_pruning.dependency.group import Group
from torch_pruning.pruner import function

# Channel positions one group may reach, beyond its own width at every layer it reaches, before its
# walk stops. A conv feeding a classifier through a flatten reaches width x spatial positions
# (VGG-16: 512 x 49, once per layer on the way); past millions more, a reshape has mixed channels
# with token or pixel positions (attention computed on conv maps) and the walk would take minutes
# for a group that cannot be cut anyway. A deep model's residual width alone is no reason to stop:
# Llama-3-8B's reaches 4,096 positions at each of some 600 layers and ops.
MAX_POSITIONS = 2_000_000
# Steps one walk may take (each admits the fresh positions one dependency reached). A plain walk takes
# a few per layer (a 32-layer LLaMA's longest walk, its residual group: 2,587); GPT-OSS's routing at
# 16 tokens reached one position per step, half a million steps in 25 s, and never finished the trace.
MAX_STEPS = 100_000


_CODE = 1 << 32  # a position's code: index * _CODE + root index + 1


class GroupTooLarge(Exception):
    """A group's walk reached more channel positions than MAX_POSITIONS (internal: its layer becomes a black box)."""


class _Seen:
    """A growing set of position codes: sorted arrays, merged when the recent ones outgrow the rest."""

    __slots__ = ("main", "recent", "count")

    def __init__(self) -> None:
        self.main = np.empty(0, dtype=np.int64)
        self.recent: list[np.ndarray] = []
        self.count = 0

    def unseen(self, codes: np.ndarray) -> np.ndarray:
        """For sorted unique ``codes``: which are not in the set."""
        mask = np.ones(len(codes), dtype=bool)
        for part in (self.main, *self.recent):
            if len(part):
                at = np.minimum(np.searchsorted(part, codes), len(part) - 1)
                mask &= part[at] != codes
        return mask

    def add(self, codes: np.ndarray) -> None:
        self.recent.append(codes)
        self.count += len(codes)
        if self.count > len(self.main) or len(self.recent) > 8:
            self.main = np.sort(np.concatenate([self.main, *self.recent]))  # disjoint parts: no repeats
            self.recent, self.count = [], 0


class ChannelsLastMerge:
    """Index mapping of a reshape that merges positions into the channel dim, channels innermost.

    Swin's patch merging: ``x.reshape(B, H/2, 2, W/2, 2, C).permute(...).flatten(3)`` makes
    [B, H/2, W/2, 4C] where channel c of the 2x2 patch's k-th pixel sits at ``k * C + c``.
    torch-pruning maps only 2-d and 4-d reshapes, so it left this one as identity, and the layer
    after it lost C/2 of its 4C inputs instead of 4 x C/2 ("mat1 and mat2 shapes cannot be
    multiplied (1024x192 and 336x96)"). Forward: c -> {k*C + c}; reverse: i -> i % C.
    """

    def __init__(self, width: int, stride: int, reverse: bool = False) -> None:
        self.width, self.stride, self.reverse = width, stride, reverse

    def __call__(self, idxs):
        if self.reverse:
            found = {(i.idx % self.width, i.root_idx) for i in idxs}
            return [_helpers._HybridIndex(idx=i, root_idx=r) for i, r in sorted(found, key=lambda t: (t[0], t[1] or -1))]
        return [_helpers._HybridIndex(idx=k * self.width + i.idx, root_idx=i.root_idx)
                for i in idxs for k in range(self.stride)]


def _mapped(mapping, pos: np.ndarray) -> np.ndarray:
    """torch-pruning's index ``mapping`` applied to positions, an (n, 2) array of (index, root index).

    The same arithmetic as torch-pruning's mapping classes, on arrays: millions of positions take
    milliseconds, where building its per-index tuples took minutes. A root index of -1 stands for
    torch-pruning's None (a grouped-query mapping forgets the root).
    """
    idx, root = pos[:, 0], pos[:, 1]
    kind = type(mapping)
    divisor = {index_mapping._FlattenIndexMapping: lambda: mapping._stride if mapping.reverse else 1,
               index_mapping._SliceIndexMapping: lambda: 1 if mapping.reverse else mapping.step,
               index_mapping._GQAIndexMapping: lambda: mapping.head_dim * mapping.repeat if mapping.reverse else 1}
    if kind in divisor and len(pos) and divisor[kind]() == 0:
        # torch-pruning's Python raises here, and the tracer then makes the block a black box
        # (GCViT's global-query attention); numpy would divide by zero silently and walk on.
        raise ZeroDivisionError(f"{kind.__name__} divides indices by zero")
    if kind is index_mapping._FlattenIndexMapping:
        stride = mapping._stride
        if mapping.reverse:
            codes = np.unique((idx // stride) * _CODE + (root + 1))
            return np.stack([codes // _CODE, codes % _CODE - 1], 1)
        if stride <= 0:  # torch-pruning's range() over a stride it inferred wrong: nothing
            return pos[:0]
        expanded = (idx[:, None] * stride + np.arange(stride)).reshape(-1)
        return np.stack([expanded, np.repeat(root, stride)], 1)
    if kind is ChannelsLastMerge:
        if mapping.reverse:
            codes = np.unique((idx % mapping.width) * _CODE + (root + 1))
            return np.stack([codes // _CODE, codes % _CODE - 1], 1)
        expanded = (idx[:, None] + mapping.width * np.arange(mapping.stride)).reshape(-1)
        return np.stack([expanded, np.repeat(root, mapping.stride)], 1)
    if kind in (index_mapping._ConcatIndexMapping, index_mapping._SplitIndexMapping):
        lo, hi = mapping.offset[0], mapping.offset[1]
        if mapping.reverse == (kind is index_mapping._ConcatIndexMapping):  # into one part: keep what falls in it
            keep = (idx >= lo) & (idx < hi)
            return np.stack([idx[keep] - lo, root[keep]], 1)
        return np.stack([idx + lo, root], 1)
    if kind is index_mapping._SliceIndexMapping:
        start, step, end = mapping.start, mapping.step, mapping.end
        if mapping.reverse:
            return np.stack([idx * step + start, root], 1)
        keep = (idx >= start) & (idx < end) & ((idx - start) % step == 0)
        return np.stack([(idx[keep] - start) // step, root[keep]], 1)
    if kind is index_mapping._GQAIndexMapping:
        if not mapping.reverse:
            return pos[:0]
        hd, rep = mapping.head_dim, mapping.repeat
        new = idx - idx // (hd * rep) * hd * (rep - 1) - idx // hd % rep * hd
        return np.stack([new, np.full_like(new, -1)], 1)
    # A mapping this module does not know: torch-pruning's own, on its tuples.
    hybrid = [_helpers._HybridIndex(idx=int(i), root_idx=None if r < 0 else int(r)) for i, r in pos]
    out = mapping(hybrid)
    return np.array([(i.idx, -1 if i.root_idx is None else i.root_idx) for i in out], dtype=np.int64).reshape(-1, 2)


def _blame(dep, message: str):
    """Raise GroupTooLarge from a frame whose only graph node is ``dep``'s (opaque.failing_nodes reads
    the innermost frames first): the reshape that spread channels over positions, not whichever
    layer the walk happened to reach when it ran over."""
    raise GroupTooLarge(f"{message}: a reshape mixes channels with positions at {dep.target.name!r}")


def _expanded(mapping, count: int) -> int:
    """How many positions ``mapping`` makes of ``count`` (a flatten multiplies them by its stride)."""
    if isinstance(mapping, index_mapping._FlattenIndexMapping) and not mapping.reverse:
        return count * mapping._stride
    if isinstance(mapping, ChannelsLastMerge) and not mapping.reverse:
        return count * mapping.stride
    return count


@contextmanager
def _concats_of_unknown_width():
    """torch-pruning's concat mapping, leaving alone a concat whose parts' widths cannot be inferred.

    torch-pruning sums the widths it infers for a concat's parts before it checks them for None, so
    a concat of tensors that no layer produced at a known width raises TypeError (RAFT's
    correlation lookup: ``cat([grid_sample(...).view(b, h, w, -1), ...], dim=-1)``, in the model's
    own forward, where no black box can hold it). Its own code leaves such a concat unmapped a line
    later: that is done here before the sum.
    """
    original = index_mapping.update_concat_index_mapping

    def update(graph, node) -> None:
        if node.type == ops.OPTYPE.CONCAT:
            sizes = node.module.concat_sizes or [shape_infer.infer_channels_between(graph, n, node) for n in node.inputs]
            if None in sizes:
                return
        original(graph, node)

    index_mapping.update_concat_index_mapping = update
    try:
        yield
    finally:
        index_mapping.update_concat_index_mapping = original


def _slices_positions(graph, node) -> bool:
    """A slice over another dimension than the channels, which torch-pruning maps as a channel slice.

    torch-pruning takes a slice of dimension 1 of a 4-d tensor (any dimension of a 5-d one) for a
    slice of the channels. In channels-last maps that is a slice of rows: torchvision's Swin merges
    patches with ``x[..., 0::2, 0::2, :]`` on [B, H, W, C], and the cut then removed every other
    channel's index from the wrong places. When the producer's width is known and the sliced
    dimension has another size, the slice keeps every channel where it is.
    """
    sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    dim = getattr(node.grad_fn, "_saved_dim", None)
    if not sizes or dim is None:
        return False
    if dim >= 1 << 63:  # a negative dimension, saved unsigned
        dim -= 1 << 64
    if not -len(sizes) <= dim < len(sizes):
        return False
    widths = {shape_infer.infer_out_channels_recursively(graph, source, [0]) for source in node.inputs}
    widths.discard(None)
    return len(widths) == 1 and int(sizes[dim]) not in widths


class _ShapedTuple(tuple):
    """The tuple a Linear subclass returns (PhiMoE's and Llama 4's routers: ``(logits, indices)``),
    answering ``.shape`` as its first item: torch-pruning reads ``outputs.shape`` of every Linear
    before it unwraps tuples. A tuple to everything else."""

    @property
    def shape(self):
        return self[0].shape if self and isinstance(self[0], torch.Tensor) else torch.Size()


def _shaped(_module, _args, output):
    return _ShapedTuple(output) if type(output) is tuple else None


class Graph(tp.DependencyGraph):
    """torch-pruning's DependencyGraph with a group expansion linear in the channels it reaches.

    ``get_all_groups`` leaves out the roots whose walk grows past MAX_POSITIONS and lists their
    errors in ``oversized`` (the tracer makes the layers they point at black boxes).
    """

    oversized: list[GroupTooLarge]
    view_shapes: dict = {}  # a reshape's grad_fn -> (input shape, output shape), as recorded in the forward

    def build_dependency(self, model, example_inputs, forward_fn=None, output_transform=None, **kwargs):
        """torch-pruning's build_dependency; embedding tables read directly are also cut (`_direct_tables`),
        and a concat of parts of unknown width is left unmapped (`_concats_of_unknown_width`)."""
        ran: set = set()
        hooks = [m.register_forward_pre_hook(lambda m, _: ran.add(m)) for m in model.modules()
                 if isinstance(m, nn.Embedding)]
        # Registered before torch-pruning's own hooks, so they see the output these give back.
        hooks += [m.register_forward_hook(_shaped) for m in model.modules()
                  if isinstance(m, nn.Linear) and type(m).forward is not nn.Linear.forward]

        def forward(m, x):
            try:
                out = forward_fn(m, x) if forward_fn is not None else m(x)
            finally:
                for hook in hooks:
                    hook.remove()
            self._direct_tables(model, ran)
            return out

        with _concats_of_unknown_width():  # RAFT's correlation lookup
            return super().build_dependency(model, example_inputs, forward_fn=forward,
                                            output_transform=output_transform, **kwargs)

    def _direct_tables(self, model: nn.Module, ran: set) -> None:
        """Embedding tables the forward reads as ``self.query_embed.weight`` (DETR's object queries), never
        calling the Embedding: torch-pruning counts the weight as the module's and, with no call to
        hook, leaves it out of the graph, so the width it is added to stays whole or breaks when cut.
        Read that way, the table is a parameter whose columns are channels, like a ViT's class token.
        """
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, nn.Embedding) and module not in ran and isinstance(weight, nn.Parameter) \
                    and weight.requires_grad and all(weight is not p for p, _ in self.unwrapped_parameters):
                self.unwrapped_parameters.append(_helpers.UnwrappedParameters(parameters=weight, pruning_dim=1))
                self._param_to_name[weight] = f"{name}.weight"

    def set_concat_sizes(self, sizes: dict, last: dict | None = None) -> None:
        """The widths each concatenation joined, as recorded in the forward (grad_fn -> widths).

        torch-pruning infers them from the layers upstream, which is wrong where a slice comes
        first (ReXNet's ``cat([x[:, :c] + shortcut, x[:, c:]])`` counts the slice at the full
        width): its offsets then send indices past the ends of layers, and the walk never ends.

        ``last``: the inputs' last-dim sizes of concatenations along another dim. Where those are
        the channel widths torch-pruning infers for the inputs, the concatenation joins tokens, not
        channels (a class token prepended to [B, N, C] patches with ``cat(dim=1)``, DINOv2 and
        ViTs): every input keeps its channel indices, so it is traced as an element-wise op
        (torch-pruning reads dim 1 as channels: it shifted the patches' channels by the class
        token's count, and counted the tokens as the width of everything after it). A concatenation
        whose recorded widths are the channel widths torch-pruning infers is mapped, also where
        torch-pruning turned mapping off because a 3-d parameter (a class token) is upstream of it
        (DINOv2's head: ``cat([h[:, 0], h[:, 1:].mean(1)], dim=1)``).
        """
        last = last or {}
        for node in self.module2node.values():
            recorded = sizes.get(node.grad_fn)
            if isinstance(node.module, ops._ConcatOp) and recorded and len(recorded) == len(node.inputs):
                node.module.concat_sizes = list(recorded)
                widths = last.get(node.grad_fn)
                inferred = [shape_infer.infer_channels_between(self, n, node) for n in node.inputs]
                if widths and widths != recorded and len(set(widths)) == 1 and widths == inferred:
                    node.type, node.module.concat_sizes = ops.OPTYPE.ELEMENTWISE, None
                elif recorded == inferred:
                    node.enable_index_mapping = True
        self._mapped_widths = None  # the mappings read these sizes

    def _update_index_mapping(self) -> None:
        """torch-pruning's index mappings, less the flattens it infers for reshapes that keep the channels in place.

        A reshape of token-major activations (``[B*H, W, C] -> [B, H, W, C]``, Sequencer's LSTM2d)
        leaves channel j at channel j. torch-pruning reads the reshape's output width from its
        reader, and where that reader is a concatenation it takes the whole concatenation's width
        (2C): it then maps each channel to two (a stride-2 flatten), and the cut removes the wrong
        columns of the layer after the concatenation. With the shapes recorded in the forward: when
        the last dimension is unchanged and it is where the producer's channels are, the reshape
        maps channels one to one.

        torch-pruning redoes the mappings for every group it builds after a cut; they depend only
        on the layers' widths, so they are redone only when a parameter or buffer changed shape.
        """
        widths = tuple(t.shape for t in (*self.model.parameters(), *self.model.buffers()))
        if getattr(self, "_mapped_widths", None) == widths:
            return  # nothing was cut since the last update: the mappings stand (healing trials re-group often)
        with _concats_of_unknown_width():
            index_mapping.update_index_mapping(self)
        self._mapped_widths = widths
        for node in self.module2node.values():
            shapes = self.view_shapes.get(node.grad_fn) if node.type == ops.OPTYPE.RESHAPE else None
            if shapes and shapes[0] and shapes[1] and shapes[0][-1] != shapes[1][-1]:
                self._channels_last_merge(node, *shapes)
            if not shapes or not shapes[0] or not shapes[1] or shapes[0][-1] != shapes[1][-1]:
                continue
            width = shapes[0][-1]
            if len(shapes[0]) > 2 and shapes[0][1] == width:
                continue  # the channels may as well be dim 1 (a conv map): torch-pruning's reading stands
            if not any(shape_infer.infer_out_channels_recursively(self, source, [0]) == width for source in node.inputs):
                continue
            for other in (*node.inputs, *node.outputs):
                for dep in (*node.dependencies, *other.dependencies):
                    if {dep.source, dep.target} == {node, other} and isinstance(
                            dep.index_mapping[0], index_mapping._FlattenIndexMapping):
                        dep.index_mapping[0] = None
        for node in self.module2node.values():
            if node.type == ops.OPTYPE.SLICE and _slices_positions(self, node):
                for other in node.inputs:
                    for dep in (*node.dependencies, *other.dependencies):
                        if {dep.source, dep.target} == {node, other} and isinstance(
                                dep.index_mapping[0], index_mapping._SliceIndexMapping):
                            dep.index_mapping[0] = None

    def _channels_last_merge(self, node, before: tuple, after: tuple) -> None:
        """Map a reshape that merges trailing positions into the last (channel) dim (`ChannelsLastMerge`)."""
        width = before[-1]
        if len(before) < 3 or after[-1] % width or after[-1] == width or before[1] == width:
            return  # not a merge into the last dim, or the channels may as well be dim 1 (a conv map)
        j = len(after) - 1
        if tuple(before[:j]) != tuple(after[:j]) or int(np.prod(before[j:])) != after[-1]:
            return
        if not any(shape_infer.infer_out_channels_recursively(self, source, [0]) == width for source in node.inputs):
            return
        stride = after[-1] // width
        for source in node.inputs:
            for dep in node.dependencies:
                if dep.target == source:
                    dep.index_mapping[0] = ChannelsLastMerge(width, stride, reverse=True)
            for dep in source.dependencies:
                if dep.target == node:
                    dep.index_mapping[0] = ChannelsLastMerge(width, stride)
        # A reshape right after it that no forward recorded (a Linear's own [..., 4C] -> [N, 4C]):
        # torch-pruning, counting C channels upstream of it, took that one for the flatten.
        for reader in node.outputs:
            if reader.type != ops.OPTYPE.RESHAPE or reader.grad_fn in self.view_shapes:
                continue
            for dep in (*reader.dependencies, *node.dependencies):
                if {dep.source, dep.target} == {node, reader} and isinstance(
                        dep.index_mapping[0], index_mapping._FlattenIndexMapping):
                    dep.index_mapping[0] = None

    def get_all_groups(self, ignored_layers=(), root_module_types=(ops.TORCH_CONV, ops.TORCH_LINEAR)):
        """torch-pruning's get_all_groups, going on past oversized roots."""
        self.oversized = []
        self._update_index_mapping()  # once: nothing is cut between these groups
        visited, ignored = set(), set(ignored_layers) | set(self.IGNORED_LAYERS_IN_TRACING)
        for m in list(self.module2node):
            if m in ignored or m in visited or not isinstance(m, tuple(root_module_types)):
                continue
            pruner = self.get_pruner_of_module(m)
            if pruner is None or pruner.get_out_channels(m) is None:
                continue
            try:
                group = self._group(m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))), remap=False)
            except GroupTooLarge as exc:
                self.oversized.append(exc)
                continue
            prunable = True
            for dep, _ in group:
                if self.is_out_channel_pruning_fn(dep.handler):
                    visited.add(dep.target.module)
                    prunable = prunable and dep.target.module not in ignored
            if prunable:
                yield group

    def get_pruning_group(self, module, pruning_fn, idxs) -> Group:
        return self._group(module, pruning_fn, idxs, remap=True)

    def _group(self, module, pruning_fn, idxs, *, remap: bool) -> Group:
        if module not in self.module2node:
            raise ValueError(f"Module {module} is not in the dependency graph.")
        if isinstance(module, ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
            pruning_fn = function.prune_depthwise_conv_out_channels
        if isinstance(idxs, Number):
            idxs = [idxs]
        if remap:  # the graph may have been cut since: torch-pruning redoes the mappings for every group
            self._update_index_mapping()
        root = self.module2node[module]
        start = np.array([(i, i) for i in idxs], dtype=np.int64).reshape(-1, 2)
        reached = self.walk(Dependency(pruning_fn, pruning_fn, source=root, target=root), start,
                            self._module2name.get(module, type(module).__name__))
        group = Group()
        for dep, parts in reached.values():
            target = dep.target.module
            if any(target is p for p in self.ignored_params):
                continue
            pos = np.concatenate(parts)
            _, first = np.unique(pos[:, 0], return_index=True)  # one entry per index: the first root reached
            pos = pos[np.sort(first)]
            group.add_dep(dep, pos[:, 0].tolist())
            group[len(group) - 1].root_idxs = [None if r < 0 else r for r in pos[:, 1].tolist()]
        group._DG = self
        return group

    def walk(self, root_dep: Dependency, start: np.ndarray, name: str) -> dict[tuple, tuple[Dependency, list]]:
        """Every (node, pruning function) the positions ``start`` reach from ``root_dep``, each
        position once: (node, handler) -> (the first dependency that reached it, the fresh position
        arrays in the order reached). Positions are (index, root index) rows; raises GroupTooLarge
        past MAX_POSITIONS more than the root's width at each node reached, blamed on the widest
        reshape met (``name`` names the root in the message).
        """
        reached: dict[tuple, tuple[Dependency, list]] = {}
        seen: dict[tuple, _Seen] = {}  # (node, handler) -> codes of the positions walked from there
        walked = 0
        widest: list = [1, None]  # the largest flatten stride met, and its dependency: what to blame

        width = len(start)

        def too_large(count, dep):  # the root's own width at every (node, handler) is no growth
            if walked + count > MAX_POSITIONS + width * (len(reached) + 1):
                _blame(widest[1] or dep, f"the channels of {name!r} reach over {MAX_POSITIONS:,} positions")

        steps = 0

        def admit(dep, new):
            nonlocal walked, steps
            steps += 1
            if steps > MAX_STEPS:
                _blame(widest[1] or dep, f"the channels of {name!r} take over {MAX_STEPS:,} steps to walk")
            key = (dep.target, dep.handler)
            codes, first = np.unique(new[:, 0] * _CODE + (new[:, 1] + 1), return_index=True)
            done = seen.setdefault(key, _Seen())
            unseen = done.unseen(codes)
            codes, first = codes[unseen], first[unseen]
            if len(codes) == 0:
                return None
            too_large(len(codes), dep)
            walked += len(codes)
            done.add(codes)
            fresh = new[np.sort(first)]
            reached.setdefault(key, (dep, []))[1].append(fresh)
            return fresh

        stack = [(root_dep, admit(root_dep, start))]
        while stack:
            dep, current = stack.pop()
            node, fn = dep.target, dep.handler
            for new_dep in node.dependencies:
                if not new_dep.is_triggered_by(fn):
                    continue
                mapped = current
                for mapping in new_dep.index_mapping:
                    if mapping is not None:
                        grows = _expanded(mapping, len(mapped))
                        if grows > widest[0] * len(mapped):
                            widest[:] = [grows // max(len(mapped), 1), new_dep]
                        too_large(grows, new_dep)  # before building the array
                        mapped = _mapped(mapping, mapped)
                if len(mapped) == 0:
                    continue
                fresh = admit(new_dep, mapped)
                if fresh is not None:
                    stack.append((new_dep, fresh))
        return reached
