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

from numbers import Number

import torch_pruning as tp
from torch_pruning import _helpers, ops
from torch_pruning.dependency import index_mapping
from torch_pruning.dependency.dependency import Dependency
from torch_pruning.dependency.group import Group
from torch_pruning.pruner import function

# Channel positions one group may reach before its walk stops. A conv feeding a classifier through
# a flatten reaches width x spatial positions (VGG-16: 512 x 49, once per layer on the way); past
# millions, a reshape has mixed channels with token or pixel positions (attention computed on conv
# maps) and the walk would take minutes for a group that cannot be cut anyway.
MAX_POSITIONS = 2_000_000


class GroupTooLarge(Exception):
    """A group's walk reached more channel positions than MAX_POSITIONS (internal: its layer becomes a black box)."""


class Graph(tp.DependencyGraph):
    """torch-pruning's DependencyGraph with a group expansion linear in the channels it reaches."""

    def get_pruning_group(self, module, pruning_fn, idxs) -> Group:
        if module not in self.module2node:
            raise ValueError(f"Module {module} is not in the dependency graph.")
        if isinstance(module, ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
            pruning_fn = function.prune_depthwise_conv_out_channels
        if isinstance(idxs, Number):
            idxs = [idxs]
        index_mapping.update_index_mapping(self)
        root = self.module2node[module]
        start = [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs]

        reached: dict[tuple, tuple[Dependency, dict]] = {}  # (node, handler) -> (first dep, idx -> index)
        seen: dict[tuple, set] = {}  # (node, handler) -> hybrid indices already walked from there
        walked = 0

        def admit(dep, new):
            nonlocal walked
            key = (dep.target, dep.handler)
            done = seen.setdefault(key, set())
            fresh = [i for i in dict.fromkeys(new) if i not in done]
            if not fresh:
                return None
            done.update(fresh)
            walked += len(fresh)
            if walked > MAX_POSITIONS:
                raise GroupTooLarge(f"channels of {self._module2name.get(module, type(module).__name__)!r} reach "
                                    f"over {MAX_POSITIONS:,} positions (a reshape mixes channels with positions)")
            first = reached.setdefault(key, (dep, {}))[1]
            for i in fresh:
                first.setdefault(i.idx, i)
            return fresh

        root_dep = Dependency(pruning_fn, pruning_fn, source=root, target=root)
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
                        mapped = mapping(mapped)
                if len(mapped) == 0:
                    continue
                fresh = admit(new_dep, mapped)
                if fresh:
                    stack.append((new_dep, fresh))

        group = Group()
        for dep, by_idx in reached.values():
            target = dep.target.module
            if any(target is p for p in self.ignored_params):
                continue
            hybrid = list(by_idx.values())
            group.add_dep(dep, _helpers.to_plain_idxs(hybrid))
            group[len(group) - 1].root_idxs = _helpers.to_root_idxs(hybrid)
        group._DG = self
        return group
