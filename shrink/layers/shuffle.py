"""Channel shuffle (ShuffleNet): ``x.view(b, groups, c // groups, h, w).transpose(1, 2)``; kept whole.

What the family looks like: a 4-D activation viewed as [batch, groups, channels per group, h, w],
its dims 1 and 2 swapped and flattened back, so channel ``g * per + i`` moves to ``i * groups + g``.
The traced graph maps channels through the two views one by one and gets the permutation (and,
after ``x.chunk(2, dim=1)`` and a concatenation, even the widths) wrong.

How to cut: not through the shuffle. `ShuffleWatch` notes, while the graph is traced, every
transpose or permute that swaps dims 1 and 2 of a 5-D tensor; a group that passes through one is
kept whole with that reason. The layers inside each branch (1x1 conv -> depthwise -> 1x1 conv)
are their own groups and are still cut.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

REASON = "channel shuffle (view into groups, transpose(1, 2)): its width is kept whole"
_SWAPS = ("transpose", "swapaxes", "swapdims", "permute")


class ShuffleWatch(TorchFunctionMode):
    """While the graph is traced: the autograd nodes of group/channel swaps of 5-D activations."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.nodes: set = set()
        self.__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in _SWAPS and isinstance(out, torch.Tensor) and out.grad_fn is not None and out.dim() == 5:
            x = args[0]
            if isinstance(x, torch.Tensor) and out.shape[1] == x.shape[2] and out.shape[2] == x.shape[1] \
                    and x.shape[1] != x.shape[2]:
                self.nodes.add(out.grad_fn)
            elif name in ("transpose", "swapaxes", "swapdims") and sorted(args[1:3]) == [1, 2]:
                self.nodes.add(out.grad_fn)
        return out

    def close(self) -> None:
        self.__exit__(None, None, None)


def node_reasons(watch: ShuffleWatch) -> dict:
    return {node: REASON for node in watch.nodes}
