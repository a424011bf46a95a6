"""`analyze`: what `compress` would see, as a report a person can read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from torch import nn

from . import graph


@dataclass(frozen=True)
class GroupInfo:
    """One set of coupled channels.

    Attributes:
        root: the layer the group is named after.
        layers: every layer the group touches, as ``"name (out)"`` or ``"name (in)"``.
        width: channels in the group (heads, for attention heads).
        kinds: couplings seen: residual add, concat, split, depthwise conv, grouped conv, norm,
            embedding, attention heads, grouped-query, attention (per-head dims).
        prunable: False when the group is kept whole.
        reason: why a group is kept whole ("model output", "ignored", ...); empty if prunable.
    """

    root: str
    layers: tuple[str, ...]
    width: int
    kinds: tuple[str, ...]
    prunable: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GraphReport:
    """Every group of coupled channels and every layer kept whole, with the reason.

    Attributes:
        groups: the groups, in trace order.
        kept_whole: ``(layer name, reason)`` for each layer whose outputs no cut narrows.
    """

    groups: tuple[GroupInfo, ...]
    kept_whole: tuple[tuple[str, str], ...]

    @property
    def prunable(self) -> tuple[GroupInfo, ...]:
        return tuple(g for g in self.groups if g.prunable)

    def to_dict(self) -> dict:
        return {"groups": [g.to_dict() for g in self.groups],
                "kept_whole": [{"layer": n, "reason": r} for n, r in self.kept_whole]}

    def __str__(self) -> str:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Prunable groups", title_justify="left")
        for col in ("root", "width", "coupling", "layers"):
            table.add_column(col)
        for g in self.prunable:
            shown = ", ".join(g.layers[:6]) + (f", … (+{len(g.layers) - 6})" if len(g.layers) > 6 else "")
            table.add_row(g.root, str(g.width), ", ".join(g.kinds) or "plain", shown)
        kept = Table(title="Kept whole", title_justify="left")
        kept.add_column("layer")
        kept.add_column("reason")
        for name, reason in self.kept_whole:
            kept.add_row(name, reason)
        console = Console(width=120, record=True, file=_Null(), color_system=None)
        console.print(table)
        console.print(kept)
        return console.export_text()


class _Null:
    def write(self, _):
        return 0

    def flush(self):
        pass


def analyze(model: nn.Module, example_inputs, *, ignore: Iterable = ()) -> GraphReport:
    """Trace ``model`` and report its prunable groups and the layers kept whole.

    Args:
        model: the model to inspect (not modified).
        example_inputs: a tensor, tuple of tensors, or dict of keyword tensors.
        ignore: modules or qualified names to keep whole.

    Returns:
        A `GraphReport`; ``print(report)`` shows it as tables.

    Example:
        >>> import torch, shrink
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> [g.root for g in shrink.analyze(net, torch.randn(1, 8)).prunable]
        ['0']
    """
    traced = graph.trace(model, example_inputs, ignore=ignore)
    groups = [
        GroupInfo(g.root_name, g.members, g.width, g.kinds, g.protected is None, g.protected or "")
        for g in traced.groups
    ]
    for b in traced.blocks:
        layers = tuple(f"{traced.names[m]} (out)" for m in dict.fromkeys(b.producers())) + (f"{traced.names[b.out]} (in)",)
        kinds = ("attention heads",) + (("grouped-query",) if b.num_kv_heads < b.num_heads else ())
        reason = "" if b.units > 1 else "a single head (or key/value group)"
        groups.append(GroupInfo(b.name, layers, b.num_heads, kinds, b.units > 1, reason))
    return GraphReport(tuple(groups), tuple(sorted(traced.kept.items())))
