"""Channel shuffle (ShuffleNet): ``x.view(b, groups, c // groups, h, w).transpose(1, 2)``; kept whole.

What the family looks like: a 4-D activation viewed as [batch, groups, channels per group, h, w],
its dims 1 and 2 swapped and flattened back, so channel ``g * per + i`` moves to ``i * groups + g``.
The traced graph maps channels through the two views one by one and gets the permutation (and,
after ``x.chunk(2, dim=1)`` and a concatenation, even the widths) wrong.

How to cut: not through the shuffle. `op_reason` notes, while the graph is traced, every
transpose or permute that swaps dims 1 and 2 of a 5-D tensor; a group that passes through one is
kept whole with that reason. The layers inside each branch (1x1 conv -> depthwise -> 1x1 conv)
are their own groups and are still cut.
"""

from __future__ import annotations

import torch

REASON = "channel shuffle (view into groups, transpose(1, 2)): its width is kept whole"
_SWAPS = ("transpose", "swapaxes", "swapdims", "permute")


def op_reason(func, args: tuple, kwargs: dict, out: torch.Tensor) -> str | None:
    """The reason to keep a group whole if this call swaps dims 1 and 2 of a 5-D activation."""
    if getattr(func, "__name__", "") not in _SWAPS or out.dim() != 5 or not isinstance(args[0], torch.Tensor):
        return None
    x = args[0]
    if out.shape[1] == x.shape[2] and out.shape[2] == x.shape[1] and x.shape[1] != x.shape[2]:
        return REASON
    if getattr(func, "__name__", "") != "permute" and sorted(args[1:3]) == [1, 2]:
        return REASON
    return None
