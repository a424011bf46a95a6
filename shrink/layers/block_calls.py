"""The first call of each of some blocks while the graph is traced: its inputs and its output's shape.

The layer families that learn a block's shape rules by trial (`tied_attention.Probe`,
`input_width_heads.Probe`) run the block again after the trace, on these inputs, with a head fewer.
"""

from __future__ import annotations

import torch
from torch import nn


class BlockCalls:
    """Hooks on ``modules`` noting each one's first inputs (detached) and first output's shape."""

    def __init__(self, modules) -> None:
        self.inputs: dict[nn.Module, tuple[tuple, dict]] = {}
        self.shapes: dict[nn.Module, torch.Size] = {}
        self._handles = []
        for module in modules:
            self._handles.append(module.register_forward_pre_hook(self._note, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._shape))

    def _note(self, module, args, kwargs) -> None:
        detach = lambda v: v.detach() if isinstance(v, torch.Tensor) else v  # noqa: E731
        self.inputs.setdefault(module, (tuple(detach(a) for a in args), {k: detach(v) for k, v in kwargs.items()}))

    def _shape(self, module, args, output) -> None:
        first = output if isinstance(output, torch.Tensor) else output[0]
        if isinstance(first, torch.Tensor):
            self.shapes.setdefault(module, first.shape)

    def close(self) -> None:
        """Remove the hooks (what was noted stays until `clear`)."""
        for handle in self._handles:
            handle.remove()

    def of(self, module: nn.Module) -> tuple[tuple, dict, torch.Size] | None:
        """(args, kwargs, output shape) of ``module``'s first call, or None if it gave no tensor."""
        if module not in self.shapes:
            return None
        return (*self.inputs[module], self.shapes[module])

    def clear(self) -> None:
        self.inputs.clear()
