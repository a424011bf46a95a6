"""One exception family: every error shrink raises on purpose is a `ShrinkError`.

Subclasses also inherit the built-in exception a caller would expect (`ValueError`,
`TypeError`), so ``except ValueError`` keeps working for code that does not know shrink.
"""

from __future__ import annotations

__all__ = [
    "ShrinkError",
    "ShrinkValueError",
    "ShrinkTypeError",
    "UnsupportedLayerError",
    "PlanMismatchError",
    "CheckFailedError",
    "ParityError",
]


class ShrinkError(Exception):
    """Base class of every error shrink raises on purpose."""


class ShrinkValueError(ShrinkError, ValueError):
    """An argument has the right type but a wrong value."""


class ShrinkTypeError(ShrinkError, TypeError):
    """An argument has the wrong type."""


class UnsupportedLayerError(ShrinkValueError):
    """A layer cannot be cut; the message names it and suggests ``ignore=``.

    Attributes:
        layers: the qualified names to keep whole (the CLI spells them ``--ignore NAME``).
    """

    def __init__(self, message: str, *, layers: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.layers = tuple(layers)


class PlanMismatchError(ShrinkValueError):
    """A saved plan or set of weights does not fit the model it is applied to."""


class CheckFailedError(ShrinkError):
    """A check on a result failed (the CLI exits with code 1 on these)."""


class ParityError(CheckFailedError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""
