"""The widths a speed target can change, and the layers each one narrows.

A *knob* is one width the cut can change: a channel group (its units, lowest L1 first) or an
attention block (its heads). A *layer* is a convolution or linear layer with its input shape as
traced; its output width follows one knob and its input width another (a depthwise conv follows
the same knob on both sides). Channel counts scale in proportion to the units a knob keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .._util import inputs as _inputs
from ..cut import graph, select
from ..cut.measure import _macs_of
from ..layers import attention
from ..layers.rows import is_hf_conv1d


@dataclass
class Knob:
    """One width the cut can change.

    Attributes:
        name: the key of the per-layer ratio dict that narrows it (group root or attention block).
        units: units it has (channels, or heads); ``scores`` holds one L1 score per unit.
        kind: "channels" or "heads".
        members: layer names a per-layer ratio dict may use for it (round_to="auto").
        channels_per_unit: channels one unit stands for (a head: head_dim per query head it has).
        mass: L1 mass of the weights its units carry (Σ|w| of the rows its layers produce and the
            columns they read for it), set by `build`; None counts every channel as 1.
    """

    name: str
    units: int
    scores: torch.Tensor
    kind: str = "channels"

    members: frozenset = frozenset()
    channels_per_unit: int = 1
    mass: float | None = None

    def value(self, keep: int) -> float:
        """Importance kept with ``keep`` units: the knob's weight mass times the share of its L1
        scores the top ``keep`` units hold.

        A unit is worth the weights it carries: a channel of a 2048-wide or 3x3 layer carries more
        than one of a 16-wide 1x1 layer, and a head all of its rows and columns. (Counting units
        alike, as scores scaled to mean 1 per knob do, made narrowing a shared residual stream or a
        classifier input look cheap.) A weight read by two knobs counts for both: the loss of
        narrowing both is over-counted by the product of the fractions cut, never under-counted."""
        if not hasattr(self, "_cumulative"):
            s = self.scores.double().clamp_min(0)
            top = torch.cumsum(torch.sort(s, descending=True).values, 0)
            share = top / top[-1] if float(top[-1]) > 0 else torch.arange(1, len(s) + 1, dtype=torch.float64) / len(s)
            mass = self.units * self.channels_per_unit if self.mass is None else self.mass
            self._cumulative = [0.0, *(mass * share).tolist()]
        return self._cumulative[keep]


@dataclass
class Layer:
    """A convolution or linear layer whose cost depends on the knobs around it.

    Attributes:
        name: qualified name.
        op: "conv" or "linear".
        c_in, c_out: full widths; ``groups``: conv groups (depthwise when == c_in == c_out).
        shape: input shape at batch 1, channels at dim 1 (conv) or last (linear).
        attrs: conv kernel, stride, padding, dilation.
        knob_in, knob_out: indices into `Space.knobs`, or None where that width stays.
        macs, weight, bias: full MACs on the example inputs (as `count` counts) and parameter elements.
        mass: Σ|w| of the weight.
    """

    name: str
    op: str
    c_in: int
    c_out: int
    groups: int
    shape: tuple[int, ...]
    attrs: dict = field(default_factory=dict)
    knob_in: int | None = None
    knob_out: int | None = None
    macs: int = 0
    weight: int = 0
    bias: int = 0
    mass: float = 0.0

    @property
    def depthwise(self) -> bool:
        return self.op == "conv" and self.groups == self.c_in == self.c_out and self.groups > 1


@dataclass
class Space:
    """Knobs and layers of one traced model."""

    knobs: list[Knob]
    layers: list[Layer]

    def widths(self, keep: list[int]) -> list[tuple[int, int, int]]:
        """(c_in, c_out, groups) of every layer when knob ``i`` keeps ``keep[i]`` units."""
        out = []
        for layer in self.layers:
            c_in = _scaled(layer.c_in, self.knobs, layer.knob_in, keep)
            c_out = _scaled(layer.c_out, self.knobs, layer.knob_out, keep)
            groups = c_in if layer.depthwise else layer.groups
            out.append((c_in, c_out, groups))
        return out


def _scaled(full: int, knobs: list[Knob], k: int | None, keep: list[int]) -> int:
    if k is None:
        return full
    return max(1, round(full * keep[k] / knobs[k].units))


_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def build(traced: graph.Traced, example_inputs, *, p: int = 1) -> Space:
    """The knobs and layers of a traced model (one forward pass records each layer's input)."""
    model = traced.model
    knobs: list[Knob] = []
    knob_in: dict[nn.Module, int] = {}
    knob_out: dict[nn.Module, int] = {}
    for group in traced.groups:
        if group.protected is not None or group.width % group.channel_groups:
            continue
        scores = select._unit_scores(traced, group, p)
        knobs.append(Knob(group.root_name, len(scores), scores, "channels",
                          frozenset(group.producers())))
        for dep, _ in group.tp_group:
            module = dep.target.module
            if isinstance(module, _LAYERS) or is_hf_conv1d(module):
                is_out = traced.dg.is_out_channel_pruning_fn(dep.handler)
                (knob_out if is_out else knob_in).setdefault(module, len(knobs) - 1)
    for block in traced.blocks:
        if block.units <= 1:
            continue
        names = frozenset({block.name} | {traced.names[m] for m in (block.q, block.k, block.v)})
        knobs.append(Knob(block.name, block.units, attention.unit_scores(block, p), "heads", names,
                          block.head_dim * block.heads_per_unit))
        for module, dim, _ in attention.cuts(block, [0]):
            (knob_out if dim == "out" else knob_in).setdefault(module, len(knobs) - 1)
    layers = _record(model, example_inputs)
    for layer in layers:
        module = layer.attrs.pop("_module")
        layer.knob_in, layer.knob_out = knob_in.get(module), knob_out.get(module)
        if layer.depthwise and layer.knob_in is None:
            layer.knob_in = layer.knob_out
    _set_mass(knobs, layers)
    return Space(knobs, layers)


def _set_mass(knobs: list[Knob], layers: list[Layer]) -> None:
    """Each knob's weight mass: its layers' weights, on whichever side it narrows (once per layer).
    A knob on no recorded layer (a norm, an embedding) gets the median mass per channel of the others."""
    for knob in knobs:
        knob.mass = 0.0
    for layer in layers:
        for j in {layer.knob_in, layer.knob_out} - {None}:
            knobs[j].mass += layer.mass
    per = sorted(k.mass / (k.units * k.channels_per_unit) for k in knobs if k.mass > 0)
    for knob in knobs:
        if knob.mass <= 0:
            knob.mass = (per[len(per) // 2] if per else 1.0) * knob.units * knob.channels_per_unit


def _record(model: nn.Module, example_inputs) -> list[Layer]:
    """Each conv/linear layer with its input shape, MACs and parameters, from one forward pass."""
    names = {m: n for n, m in model.named_modules()}
    found: dict[nn.Module, Layer] = {}
    batch = _inputs.batch_of(example_inputs)

    def hook(module, inputs, output):
        if module in found or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        x = inputs[0]
        shape = (1, *x.shape[1:]) if batch and x.shape[0] == batch else tuple(x.shape)
        bias = getattr(module, "bias", None)
        common = dict(name=names[module], shape=tuple(shape), macs=_macs_of(module, inputs, output),
                      weight=module.weight.numel(), mass=float(module.weight.detach().abs().double().sum()),
                      bias=bias.numel() if isinstance(bias, torch.Tensor) else 0)
        if isinstance(module, nn.modules.conv._ConvNd):
            padding = module.padding
            if isinstance(padding, str):  # "same"/"valid": explicit pads of the kernel
                padding = tuple((d * (k - 1)) // 2 if padding == "same" else 0
                                for k, d in zip(module.kernel_size, module.dilation))
            attrs = dict(kernel=tuple(module.kernel_size), stride=tuple(module.stride), padding=tuple(padding),
                         dilation=tuple(module.dilation))
            found[module] = Layer(op="conv", c_in=module.in_channels, c_out=module.out_channels,
                                  groups=module.groups, attrs=attrs, **common)
        else:
            c_in, c_out = (module.weight.shape[0], module.weight.shape[1]) if is_hf_conv1d(module) else \
                (module.in_features, module.out_features)
            found[module] = Layer(op="linear", c_in=int(c_in), c_out=int(c_out), groups=1, **common)
        found[module].attrs["_module"] = module

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if (isinstance(m, _LAYERS) and not getattr(m, "transposed", False)) or is_hf_conv1d(m)]
    try:
        with torch.no_grad():
            _inputs.run(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return list(found.values())


def ratios(space: Space, keep: list[int]) -> dict[str, float]:
    """The per-layer ratio dict that makes `compress` keep exactly ``keep[i]`` units of knob i."""
    # floor(r * units + 1e-9) in select recovers units - keep exactly from this float.
    out = {}
    for knob, n in zip(space.knobs, keep):
        for part, m in (knob.part_keeps(n) if hasattr(knob, "part_keeps") else [(knob, n)]):  # tie.py
            if m < part.units:
                out[part.name] = (part.units - m) / part.units
    return out

