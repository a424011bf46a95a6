"""In-place arithmetic on a layer's output that is a view (Longformer's and LED's ``query /= sqrt(head_dim)``).

What the family looks like: a linear layer run on a transposed input (``hidden_states.transpose(0,
1)``: [seq, batch, width]) gives a view of its matmul, and the forward divides it in place
(``query_vectors /= math.sqrt(self.head_dim)``). Autograd records an in-place op on a view on the
view's base (CopySlices), which replaces the node torch-pruning saw the layer give: the tracer then
meets the layer's matmul as an unknown op that passes its input channels straight through, and the
residual width joins the rows of the queries, keys and values (through the attention products).
Those rows are cut by whole heads, so every residual group was dropped: Longformer and LED never
cut their hidden width, and their heads, which must go with it, failed.

How to cut: as every layer. While the graph is traced, an in-place add, subtract, multiply or
divide of a view that autograd records computes out of place instead. An augmented assignment
(``q /= s``) binds its name to the result, so the forward computes the same values and the graph
keeps the layer's node.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_OUT_OF_PLACE = {
    torch.Tensor.add_: torch.add,
    torch.Tensor.sub_: torch.sub,
    torch.Tensor.mul_: torch.mul,
    torch.Tensor.div_: torch.div,
}


class _OutOfPlace(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        plain = _OUT_OF_PLACE.get(func)
        if plain is not None and args and _recorded_view(args[0]):
            return plain(*args, **kwargs)
        return func(*args, **kwargs)


def _recorded_view(t) -> bool:
    return isinstance(t, torch.Tensor) and t.grad_fn is not None and t._is_view()


class OutOfPlace:
    """While the graph is traced: in-place arithmetic on recorded views computes out of place."""

    def __init__(self, model: nn.Module) -> None:
        self._mode = _OutOfPlace()
        self._mode.__enter__()
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._mode.__exit__(None, None, None)
