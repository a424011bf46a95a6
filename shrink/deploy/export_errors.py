"""What to tell the user when the ONNX exporter gives up: which operator, and what to do about it."""

from __future__ import annotations

import re

# How exporters name the operator they cannot translate, e.g. "aten::linalg_eig", "aten.linalg_eig.default",
# "Exporting the operator 'aten::foo' to ONNX opset version 17 is not supported".
_OP = re.compile(r"(aten(?:::|\.)[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?|prim::[A-Za-z0-9_]+)")


def unsupported_op(exc: BaseException) -> str | None:
    """The first operator an exporter error names, if any (searched through the chained causes)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        m = _OP.search(str(exc))
        if m:
            return m.group(1).replace("::", ".")
        exc = exc.__cause__ or exc.__context__
    return None


def export_failure(exc: BaseException) -> str:
    """One message: what failed, the operator if one is named, and what to try."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    op = unsupported_op(exc)
    what = f"the operator {op!r} has no ONNX translation here" if op else f"{type(exc).__name__}: {first}"
    return (
        f"ONNX export failed: {what}. Try another opset (opset=18), exporter='torchscript', or "
        "rewrite the layer that uses it with supported operations (the operator is in the model's "
        "forward, so cutting fewer layers does not avoid it)."
        + (f" Exporter said: {type(exc).__name__}: {first}" if op else "")
    )
