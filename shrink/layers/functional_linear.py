"""Linear layers whose weights the parent's forward passes to ``F.linear`` (torchvision's Swin).

What the family looks like: torchvision's ``ShiftedWindowAttention`` owns ``qkv`` and ``proj``
Linear layers but never calls them; its forward calls the function
``shifted_window_attention(x, self.qkv.weight, self.proj.weight, ..., qkv_bias=self.qkv.bias, ...)``,
which runs ``F.linear(x, qkv_weight, qkv_bias)`` (Swin V2 passes a copy of the bias with the keys'
part zeroed). The graph tracer knows layers by the forward calls it sees, so these two layers are
missing from it: their products look like element-wise operations that carry the input's channel
indices through (3C outputs read as C), and the residual group's walk blows up in the window
reshapes until whole blocks are traced as black boxes (swin_t lost 0.1% of its parameters).

How to trace it: while the graph is traced, `Routed` makes ``F.linear`` with a Linear layer's own
weight run through that layer's call (its hooks fire, so the tracer sees the layer), computing
the same product with the bias that was passed. Nothing changes after the cut: the forward reads
the cut layers' weights as before. ``nn.MultiheadAttention``'s ``out_proj`` is left alone (its
functional forward is traced by attention.py's own rules).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class Routed:
    """While open: ``F.linear(x, layer.weight, b)`` outside ``layer``'s own forward runs as a call of ``layer``."""

    def __init__(self, model: nn.Module) -> None:
        skip = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
        self.layers = {id(m.weight): m for m in model.modules()
                       if isinstance(m, nn.Linear) and id(m) not in skip and isinstance(m.weight, nn.Parameter)}
        self.running: set[int] = set()  # layers inside their own call now (their forward calls F.linear itself)
        self.routed = 0
        self.original = F.linear
        self.hooks = []
        if not self.layers:
            return
        for m in self.layers.values():
            self.hooks.append(m.register_forward_pre_hook(self._enter))
            self.hooks.append(m.register_forward_hook(self._leave, always_call=True))
        F.linear = self._linear

    def _enter(self, module, args) -> None:
        self.running.add(id(module))

    def _leave(self, module, args, out) -> None:
        self.running.discard(id(module))

    def _linear(self, input, weight, bias=None):
        layer = self.layers.get(id(weight))
        if layer is None or id(layer) in self.running or bias is not None and bias.shape != (weight.shape[0],):
            return self.original(input, weight, bias)
        if bias is not None and layer.bias is None:  # biases of its own (BEiT): tied_attention.py traces those
            return self.original(input, weight, bias)
        self.routed += 1
        if bias is layer.bias:
            return layer(input)
        # another bias (Swin V2 zeroes the keys' part of a copy): the layer's call, with that bias
        own = layer.__dict__.get("forward")  # a forward set on the instance before, if any
        layer.forward = lambda x: self.original(x, weight, bias)
        try:
            return layer(input)
        finally:
            del layer.forward
            if own is not None:
                layer.forward = own

    def close(self) -> None:
        if F.linear == self._linear:
            F.linear = self.original
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
