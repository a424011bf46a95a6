"""`analyze`: what `compress` would see, as a report a person can read."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from torch import nn

from .._util.checks import uncompiled
from . import graph
from .compress import compress


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
        reason: why a group is kept whole ("model output", "ignored", a black box to the tracer,
            or what broke when it was trial-cut); empty if prunable.
        check: how its trial cut was verified: "exact" (equal to the masked original),
            "shape only" (a LayerNorm-style layer mixes its channels), or "" when not trial-cut.
    """

    root: str
    layers: tuple[str, ...]
    width: int
    kinds: tuple[str, ...]
    prunable: bool
    reason: str = ""
    check: str = ""

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
        for col in ("root", "width", "coupling", "checked", "layers"):
            table.add_column(col)
        for g in self.prunable:
            shown = ", ".join(g.layers[:6]) + (f", … (+{len(g.layers) - 6})" if len(g.layers) > 6 else "")
            table.add_row(g.root, str(g.width), ", ".join(g.kinds) or "plain", g.check or "-", shown)
        broken = [g for g in self.groups if not g.prunable]
        if broken:
            whole = Table(title="Groups kept whole", title_justify="left")
            whole.add_column("group")
            whole.add_column("reason")
            for g in broken:
                whole.add_row(g.root, g.reason)
        kept = Table(title="Kept whole", title_justify="left")
        kept.add_column("layer")
        kept.add_column("reason")
        for name, reason in self.kept_whole:
            kept.add_row(name, reason)
        console = Console(width=120, record=True, file=_Null(), color_system=None)
        console.print(table)
        if broken:
            console.print(whole)
        console.print(kept)
        return console.export_text()


class _Null:
    def write(self, _):
        return 0

    def flush(self):
        pass


def analyze(model: nn.Module, example_inputs, *, ignore: Iterable = (), check: bool = True,
            ratio: float = 0.5, trace_timeout: float | None = 180.0) -> GraphReport:
    """Trace ``model`` and report its prunable groups and the layers kept whole.

    With ``check=True`` (the default) every group is trial-cut at ``ratio`` with the machinery
    `compress` uses, so the report lists, in one run, every group compress would keep whole and
    why (the layer that broke and the error), and how each cut was verified.

    Args:
        model: the model to inspect (not modified).
        example_inputs: a tensor, tuple of tensors, or dict of keyword tensors.
        ignore: modules or qualified names to keep whole.
        check: trial-cut the groups (slower: one compress); False only traces.
        ratio: the fraction trial-cut from each group.
        trace_timeout: seconds tracing may take.

    Returns:
        A `GraphReport`; ``print(report)`` shows it as tables.

    Example:
        >>> import torch, shrink
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> [g.root for g in shrink.analyze(net, torch.randn(1, 8)).prunable]
        ['0']
    """
    model = uncompiled(model)
    traced = graph.trace(model, example_inputs, ignore=ignore, timeout=trace_timeout)
    broken: dict[str, str] = {}
    checks: dict = {}
    if check:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = compress(model, example_inputs, ratio=ratio, ignore=ignore, trace_timeout=trace_timeout)
        broken, checks = result.kept_whole, result.plan.checks
    exact, loose = set(checks.get("exact", ())), set(checks.get("shape_only", ()))

    def checked(name: str) -> str:
        return "exact" if name in exact else "shape only" if name in loose else ""

    groups = []
    for g in traced.groups:
        reason = g.protected or broken.get(g.root_name, "")
        groups.append(GroupInfo(g.root_name, g.members, g.width, g.kinds, not reason, reason, checked(g.root_name)))
    for b in traced.blocks:
        layers = tuple(f"{traced.names[m]} (out)" for m in dict.fromkeys(b.producers())) + (f"{traced.names[b.out]} (in)",)
        kinds = ("attention heads",) + (("grouped-query",) if b.num_kv_heads < b.num_heads else ())
        reason = "" if b.units > 1 else "a single head (or key/value group)"
        reason = reason or broken.get(b.name, "")
        groups.append(GroupInfo(b.name, layers, b.num_heads, kinds, not reason, reason, checked(b.name)))
    return GraphReport(tuple(groups), tuple(sorted(traced.kept.items())))
