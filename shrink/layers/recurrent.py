"""Recurrent layers (nn.LSTM, nn.GRU, nn.RNN): hidden units cut across gates, directions and layers.

What the family looks like: ``weight_ih_l{k}{sfx}`` is [G*H, in] and ``weight_hh_l{k}{sfx}`` is
[G*H, H], the G gates stacked along the rows (LSTM i|f|g|o: G=4, GRU r|z|n: G=3, RNN: G=1),
``sfx`` is ``""`` or ``"_reverse"``. The module's output is [fwd | bwd] along its last dimension.

How to cut hidden unit j: rows ``j, H+j, ..., (G-1)H+j`` of every ``weight_ih``/``weight_hh`` and
bias of every layer and direction, column j of every ``weight_hh`` (the recurrence reads h), and
columns ``d*H + j`` of the next layer's ``weight_ih`` (it reads [fwd | bwd]). nn.RNNBase keeps one
``hidden_size`` for all layers, so a unit goes from all layers at once. To the graph the module's
output width is D*H in D channel groups (like a grouped conv): removing unit j removes channel
``d*H + j`` of each direction, which is also where its consumer's input columns are.

When the caller passes the initial state (``rnn(x, (h0, c0))``) its width H is fixed by the
caller, and when the module returns its final state as a model output the width is the caller's
too: then the hidden units are kept whole (see `StateWatch.fixed`). Units are cut when the module
creates its own zero state (``hx=None``), the common case inside a model.
"""

from __future__ import annotations

from types import MappingProxyType

import torch
import torch_pruning as tp
from torch import nn

GATES = MappingProxyType({nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1})


def is_recurrent(module: nn.Module) -> bool:
    return type(module) in GATES


def _gates(rnn: nn.RNNBase) -> int:
    return GATES[type(rnn)]


def _directions(rnn: nn.RNNBase) -> int:
    return 2 if rnn.bidirectional else 1


def _sfx(d: int) -> str:
    return "_reverse" if d else ""


def _set(rnn: nn.RNNBase, name: str, tensor: torch.Tensor) -> None:
    # RNNBase.__setattr__ keeps its _flat_weights list in step with the new Parameter.
    setattr(rnn, name, nn.Parameter(tensor.contiguous().clone(), requires_grad=getattr(rnn, name).requires_grad))


def cut_hidden(rnn: nn.RNNBase, keep: list[int]) -> None:
    """Keep hidden units ``keep`` (indices in [0, H)) in every gate, direction and layer."""
    if getattr(rnn, "proj_size", 0):
        raise NotImplementedError("LSTM with proj_size: its hidden units are read through a projection")
    H, G, D = rnn.hidden_size, _gates(rnn), _directions(rnn)
    keep_t = torch.tensor(keep, dtype=torch.long)
    gate_rows = torch.cat([keep_t + g * H for g in range(G)])
    # The layer above reads [fwd | bwd]: unit j is column d*H + j of its input.
    below_cols = torch.cat([keep_t + d * H for d in range(D)])
    with torch.no_grad():
        for k in range(rnn.num_layers):
            for d in range(D):
                s = f"l{k}{_sfx(d)}"
                w_ih = getattr(rnn, f"weight_ih_{s}").index_select(0, gate_rows)
                if k > 0:
                    w_ih = w_ih.index_select(1, below_cols)
                _set(rnn, f"weight_ih_{s}", w_ih)
                w_hh = getattr(rnn, f"weight_hh_{s}").index_select(0, gate_rows).index_select(1, keep_t)
                _set(rnn, f"weight_hh_{s}", w_hh)
                if rnn.bias:
                    for b in ("bias_ih", "bias_hh"):
                        _set(rnn, f"{b}_{s}", getattr(rnn, f"{b}_{s}").index_select(0, gate_rows))
    rnn.hidden_size = len(keep)


def cut_input(rnn: nn.RNNBase, keep: list[int]) -> None:
    """Keep input features ``keep`` (columns of the first layer's ``weight_ih``, both directions)."""
    keep_t = torch.tensor(keep, dtype=torch.long)
    with torch.no_grad():
        for d in range(_directions(rnn)):
            name = f"weight_ih_l0{_sfx(d)}"
            _set(rnn, name, getattr(rnn, name).index_select(1, keep_t))
    rnn.input_size = len(keep)


def unit_rows(rnn: nn.RNNBase) -> torch.Tensor:
    """A [D*H, fan_in] matrix: row d*H + j holds every weight that produces unit j (all layers).

    The same unit is cut in both directions, so both rows hold the unit's weights in both
    directions; the group sums them over its D channel groups.
    """
    H, G, D = rnn.hidden_size, _gates(rnn), _directions(rnn)
    parts = []
    for k in range(rnn.num_layers):
        for d in range(D):
            s = f"l{k}{_sfx(d)}"
            for name in (f"weight_ih_{s}", f"weight_hh_{s}"):
                w = getattr(rnn, name).detach()
                parts.append(w.view(G, H, -1).permute(1, 0, 2).reshape(H, -1))
    rows = torch.cat(parts, dim=1) / D  # counted once per direction channel below
    return rows.repeat(D, 1)


class RecurrentPruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning handler for nn.LSTM / nn.GRU / nn.RNN (its own LSTM handler cuts one layer only).

    Output channels are the module's D*H output features in D channel groups; input channels
    are the first layer's input features.
    """

    def prune_out_channels(self, layer: nn.RNNBase, idxs):
        H = layer.hidden_size
        units = sorted({int(i) % H for i in idxs})
        expected = sorted(u + d * H for d in range(_directions(layer)) for u in units)
        if sorted(int(i) for i in idxs) != expected:
            raise ValueError(f"{type(layer).__name__}: hidden unit j must be cut in every direction "
                             f"(channels d*{H}+j); got {sorted(idxs)}")
        cut_hidden(layer, [j for j in range(H) if j not in set(units)])
        return layer

    def prune_in_channels(self, layer: nn.RNNBase, idxs):
        drop = {int(i) for i in idxs}
        cut_input(layer, [i for i in range(layer.input_size) if i not in drop])
        return layer

    def get_out_channels(self, layer: nn.RNNBase) -> int:
        return layer.hidden_size * _directions(layer)

    def get_in_channels(self, layer: nn.RNNBase) -> int:
        return layer.input_size

    def get_out_channel_groups(self, layer: nn.RNNBase) -> int:
        return _directions(layer)

    def get_in_channel_groups(self, layer: nn.RNNBase) -> int:
        return 1


def pruners(model: nn.Module) -> dict:
    """The torch-pruning handlers this family brings, by module type."""
    return {t: RecurrentPruner() for t in {type(m) for m in model.modules() if is_recurrent(m)}}


class StateWatch:
    """While the graph is traced: each recurrent module runs as a one-node stand-in, and its state is watched.

    Autograd records an LSTM/GRU as many nodes (one per layer and direction, and for GRU the
    gate arithmetic, stacks and concatenations); torch-pruning would follow them as operations
    that tie the module's input width to its output width. The stand-in computes a tensor of the
    module's output shape from its input in one linear map, so the graph sees one layer with an
    input width and an output width, as it sees a Linear. It is used for tracing only; the
    model's outputs are computed by the real forward everywhere else.
    """

    def __init__(self, model: nn.Module) -> None:
        self.passed: set[nn.Module] = set()
        # id -> (state tensor, module); the tensor is held so that its id cannot be reused by a later
        # tensor (a discarded state is freed at once, and the model's output may land at its address).
        self.returned: dict[int, tuple[torch.Tensor, nn.Module]] = {}
        self._modules = [m for m in model.modules() if is_recurrent(m)]
        self._handles = [m.register_forward_hook(self._hook) for m in self._modules]
        for m in self._modules:
            m.forward = _StandIn(m)

    def _hook(self, module, args, output) -> None:
        if len(args) > 1 and args[1] is not None:
            self.passed.add(module)
        state = output[1]
        for t in state if isinstance(state, tuple) else (state,):
            self.returned[id(t)] = (t, module)

    def fixed(self, outputs: list[torch.Tensor]) -> dict[nn.Module, str]:
        """Recurrent modules whose hidden width the caller sees, with the reason they stay whole."""
        reasons = {m: "its hidden state is passed in by the caller (a layers x batch x hidden input)"
                   for m in self.passed}
        for t in outputs:
            state, module = self.returned.get(id(t), (None, None))
            if state is t:
                reasons.setdefault(module, "its final hidden state is a model output")
        return reasons

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        for m in self._modules:
            m.__dict__.pop("forward", None)


class _StandIn:
    """``rnn(input, hx)`` with the real output shapes: output = input @ 0 (one node), zero states."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        self.rnn = rnn

    def __call__(self, input, hx=None):
        rnn = self.rnn
        if not isinstance(input, torch.Tensor):  # PackedSequence: trace the real thing
            return type(rnn).forward(rnn, input, hx)
        D, H = _directions(rnn), rnn.hidden_size
        out = torch.nn.functional.linear(input, input.new_zeros(D * H, rnn.input_size))
        batch = () if input.dim() == 2 else (input.shape[0 if rnn.batch_first else 1],)
        h = input.new_zeros(rnn.num_layers * D, *batch, H)
        return out, ((h, h.clone()) if isinstance(rnn, nn.LSTM) else h)
