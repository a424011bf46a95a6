"""Shared by the examples: where results go, and a header line with the machine and versions."""

from __future__ import annotations

import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RESULTS.mkdir(exist_ok=True)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _machine import header as _header  # noqa: E402
from _machine import machine  # noqa: E402


def header() -> str:
    return _header(machine())
