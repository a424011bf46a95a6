"""A plan: exactly what was cut, replayable on a fresh un-pruned model, and readable as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PlanMismatchError

PLAN_FORMAT = 1


@dataclass(frozen=True)
class Step:
    """One cut, in the order it was made.

    Attributes:
        op: the name of the step's kind (`kind`, cut/kinds.py): ``"group"`` (a coupled channel
            group), ``"heads"`` (whole attention heads, or key/value groups), ``"head_dims"`` (the
            same dims of every head of attention tied to its input width; with Twins' ``sr``, its
            rows as ``C + row``) or ``"experts"`` (the FFN units of every expert of a
            mixture-of-experts block).
        layer: the group's root layer, or the attention block, by qualified name.
        dim: ``"out"``/``"in"`` for a group's root; ``"heads"`` for a head cut.
        removed: indices removed, in the layer's coordinates at the time of the cut.
        partner: for a head cut, the output projection whose input columns follow the heads.
        round: for iterative pruning, the round the cut belongs to; each round is traced afresh.
    """

    op: str
    layer: str
    dim: str
    removed: tuple[int, ...]
    partner: str = ""
    round: int = 0

    @property
    def kind(self):
        """The `kinds.CutKind` that cuts, checks and counts this step."""
        from .kinds import of

        return of(self.op)

    def to_dict(self) -> dict:
        d = {"op": self.op, "layer": self.layer, "dim": self.dim, "removed": list(self.removed)}
        if self.partner:
            d["partner"] = self.partner
        if self.round:
            d["round"] = self.round
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Step:
        if not isinstance(d, dict):
            raise PlanMismatchError(f"a plan step must be a JSON object; found {_kind(d)}")
        missing = sorted(k for k in ("op", "layer", "dim", "removed") if k not in d)
        if missing:
            raise PlanMismatchError(f"a plan step lacks the keys {missing}")
        for key in ("op", "layer", "dim", "partner"):
            if not isinstance(d.get(key, ""), str):
                raise PlanMismatchError(f"a plan step's {key!r} must be a string; found {_kind(d[key])}")
        from .kinds import of

        dims = of(d["op"]).dims
        if d["dim"] not in dims:
            raise PlanMismatchError(f"step {d['op']} {d['layer']!r}: dim must be one of {dims}; found {d['dim']!r}")
        removed = d["removed"]
        if not isinstance(removed, list) or not all(_index(i) for i in removed):
            bad = removed if not isinstance(removed, list) else next(i for i in removed if not _index(i))
            raise PlanMismatchError(
                f"step {d['op']} {d['layer']!r}: 'removed' must be a list of channel indices (integers >= 0); "
                f"found {bad!r}"
            )
        if len(set(removed)) != len(removed):
            raise PlanMismatchError(f"step {d['op']} {d['layer']!r}: 'removed' lists an index twice")
        rnd = d.get("round", 0)
        if not _index(rnd):
            raise PlanMismatchError(f"step {d['op']} {d['layer']!r}: 'round' must be an integer >= 0; found {rnd!r}")
        return cls(d["op"], d["layer"], d["dim"], tuple(removed), d.get("partner", ""), rnd)


@dataclass(frozen=True)
class Plan:
    """What `compress` removed, enough to redo it on a fresh instance of the un-pruned model.

    Attributes:
        steps: the cuts, in order.
        kept: per pruned layer, ``{"out": [...], "in": [...]}``: the original indices it keeps
            along each narrowed dimension (absent dimensions were not narrowed).
        widths: per pruned layer, ``{"out": [before, after], "in": [before, after]}``.
        inputs: shapes and dtypes of the example inputs the graph was traced on.
        settings: the options compress ran with.
        source_sha256: hash of the un-pruned model's weights the plan was ranked on.
        kept_whole: groups left uncut (by root layer or attention block), with the reason.
        checks: how the cut was verified: ``exact`` (equal to the masked original on the example
            inputs), ``shape_only`` (runs and keeps output shapes; LayerNorm-style layers mix the
            cut channels), and the modules traced as black boxes.
        layout: the tensors' new shapes and the attributes' new values (cut/layout.py), which `load`
            gives a fresh model without tracing it; ``{"unavailable": why}`` where the cut changed
            something no plain value describes (then `load` replays ``steps``).
    """

    steps: tuple[Step, ...]
    kept: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    widths: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    source_sha256: str = ""
    kept_whole: dict[str, str] = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    layout: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "settings": self.settings,
            "source_sha256": self.source_sha256,
            "inputs": self.inputs,
            "steps": [s.to_dict() for s in self.steps],
            "widths": self.widths,
            "kept": self.kept,
            "kept_whole": self.kept_whole,
            "checks": self.checks,
            **({"layout": self.layout} if self.layout else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """The plan a `to_dict` wrote; anything else raises `PlanMismatchError` naming what is wrong."""
        if not isinstance(d, dict):
            raise PlanMismatchError(f"a plan must be a JSON object; found {_kind(d)}")
        if d.get("format") != PLAN_FORMAT:
            raise PlanMismatchError(
                f"plan format {d.get('format')!r} is not the format this shrink reads ({PLAN_FORMAT}); "
                "re-create the plan with this version of shrink"
            )
        if not isinstance(d.get("steps"), list):
            raise PlanMismatchError(f"a plan needs 'steps', a list of cuts; found {_kind(d.get('steps'))}")
        for key in ("kept", "widths", "inputs", "settings", "layout"):
            if not isinstance(d.get(key, {}), dict):
                raise PlanMismatchError(f"a plan's {key!r} must be a JSON object; found {_kind(d[key])}")
        if not isinstance(d.get("source_sha256", ""), str):
            raise PlanMismatchError("a plan's 'source_sha256' must be a string")
        return cls(
            steps=tuple(Step.from_dict(s) for s in d["steps"]),
            kept=d.get("kept", {}),
            widths=d.get("widths", {}),
            inputs=d.get("inputs", {}),
            settings=d.get("settings", {}),
            source_sha256=d.get("source_sha256", ""),
            kept_whole=d.get("kept_whole", {}),
            checks=d.get("checks", {}),
            layout=d.get("layout", {}),
        )


def _index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kind(value) -> str:
    """A short description of a JSON value for error messages."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"
