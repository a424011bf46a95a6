"""Zero-padded channel shortcuts (CIFAR ResNet "option A"): kept whole, the rest is cut.

What the family looks like: ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``,
a shortcut that widens a residual stream by adding zero channels on both sides. The traced
graph sees an element-wise operation and couples the narrow stream with the wide one channel by
channel, which is wrong (channel c of the input is channel c + planes//4 of the output).

How to cut: not at all through the pad. Cutting both streams consistently would need the pad
widths to change per stream; it is better kept whole. `PadWatch` notes, while the graph is
traced, every constant pad that touches dimension 1 (channels); a group that passes through one
is kept whole with that reason, and the layers inside each block (conv1 -> conv2) are still cut.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

REASON = "zero-padded channel shortcut (F.pad over channels): the padded width is kept whole"


class PadWatch(TorchFunctionMode):
    """While the graph is traced: the autograd nodes of pads that add channels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.nodes: set = set()
        self.__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (F.pad, torch.constant_pad_nd) and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            x, pad = args[0], (args[1] if len(args) > 1 else kwargs.get("pad", ()))
            pairs = len(pad) // 2  # pad lists (left, right) pairs from the last dimension backwards
            if x.dim() >= 2 and pairs >= x.dim() - 1 and any(pad[2 * (x.dim() - 2):2 * (x.dim() - 1)]):
                self.nodes.add(out.grad_fn)
        return out

    def close(self) -> None:
        self.__exit__(None, None, None)


def node_reasons(watch: PadWatch) -> dict:
    """Autograd nodes whose group stays whole, with the reason."""
    return {node: REASON for node in watch.nodes}
