"""Channels folded into tokens: a Linear widened by a factor s whose outputs become s tokens each (SEW).

What the family looks like: SEW's and SEW-D's ``SEWUpsampling`` undo the encoder's pooling with
``projection = Linear(hidden, hidden * s)``, an activation, and
``h.reshape(b, n, s, d).reshape(b, n * s, d)``: token ``i * s + k`` reads rows ``k * d + j`` of the
projection as its channel j. So channel j of the upsampled width is s rows of the projection,
``j, d + j, ..., (s - 1) * d + j``, and the layer that reads it (``projector``) has d columns.

torch-pruning maps neither reshape (it follows reshapes of 1-d and 4-d tensors into channels
only): it took row j for column j, and the cut indexed past the projector's columns (IndexError),
so the width was kept whole and the config, which builds it as ``hidden_size * s``, no longer
described the model (save refused). While the graph is traced, `Folded` runs each such module as
``stack(h.chunk(s, -1), dim=2).reshape(b, n * s, d)`` instead, the same values through a split
into channel parts that an element-wise stack ties together (a gated MLP's coupling, cut/units.py):
one unit is the s rows of one channel. The width follows the hidden size's cut (cut/uniform.py's
``_follow_hidden``), so that the config's ``hidden_size * s`` is the cut width.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def _folds(module: nn.Module) -> bool:
    """A module with a ``squeeze_factor`` > 1 and a ``projection`` Linear that many times wider."""
    s, projection = getattr(module, "squeeze_factor", None), getattr(module, "projection", None)
    return (isinstance(s, int) and s > 1 and isinstance(projection, nn.Linear)
            and callable(getattr(module, "activation", None)) and projection.out_features % s == 0)


def _forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """``SEWUpsampling.forward``, with the channels split into s parts and stacked as tokens."""
    hidden_states = self.activation(self.projection(hidden_states))
    b, n, c = hidden_states.shape
    s = self.squeeze_factor
    parts = hidden_states.chunk(s, -1)  # part k is the channels of token k of each group of s
    return torch.stack(parts, dim=2).reshape(b, n * s, c // s)


class Folded:
    """While the graph is traced: each upsampling module runs its fold as a split and a stack."""

    def __init__(self, model: nn.Module) -> None:
        self._patched = [m for m in model.modules() if _folds(m) and "forward" not in vars(m)]
        for module in self._patched:
            module.forward = types.MethodType(_forward, module)

    def close(self) -> None:
        for module in self._patched:
            del module.forward
        self._patched = []
