"""Zero-padded channel shortcuts (CIFAR ResNet "option A"): kept whole, the rest is cut.

What the family looks like: ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``,
a shortcut that widens a residual stream by adding zero channels on both sides. The traced
graph sees an element-wise operation and couples the narrow stream with the wide one channel by
channel, which is wrong (channel c of the input is channel c + planes//4 of the output).

How to cut: not at all through the pad. Cutting both streams consistently would need the pad
widths to change per stream; it is better kept whole. `op_reason` notes, while the graph is
traced, every constant pad that touches dimension 1 (channels); a group that passes through one
is kept whole with that reason, and the layers inside each block (conv1 -> conv2) are still cut.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REASON = "zero-padded channel shortcut (F.pad over channels): the padded width is kept whole"


def op_reason(func, args: tuple, kwargs: dict, out: torch.Tensor) -> str | None:
    """The reason to keep a group whole if this call is a constant pad that adds channels."""
    if func not in (F.pad, torch.constant_pad_nd):
        return None
    x, pad = args[0], (args[1] if len(args) > 1 else kwargs.get("pad", ()))
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        return None
    pairs = len(pad) // 2  # (left, right) pairs from the last dimension backwards
    return REASON if pairs >= x.dim() - 1 and any(pad[2 * (x.dim() - 2):2 * (x.dim() - 1)]) else None
