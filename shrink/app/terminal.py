"""What reaches the terminal: shrink's own lines, in the CLI's words; other libraries only on request.

Library messages name Python keywords (``overwrite=True``, ``ignore=[...]``); a CLI user types
flags, so `cli_words` says ``--force`` and ``--ignore NAME`` instead. `quiet_libraries` keeps the
log records and Python warnings of torch, the ONNX exporter, onnxscript and the like off the
terminal unless ``-v``/``--debug`` asks for them; shrink's own warnings always show.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# (pattern, replacement), applied in order.
_WORDS = [
    (re.compile(r"\bpass overwrite=True\b"), "pass --force"),
    (re.compile(r"\boverwrite=True\b"), "--force"),
    (re.compile(r"\bignore=\[\.\.\.\]"), "--ignore NAME"),
    (re.compile(r"\bignore=\['([^'\]]+)'\]"), r"--ignore \1"),
    (re.compile(r"\bignore=\[([^\]]*)\]"), "--ignore NAME"),
    (re.compile(r"\bignore='([^']+)'"), r"--ignore \1"),
    (re.compile(r"\bignore=(?=[\s.,;:)]|$)"), "--ignore NAME"),
    (re.compile(r"\binitial_state=(?=[\s.,;:)]|$)"), "--initial"),
    (re.compile(r"\bround_to=(?=[\s.,;:)]|$)"), "--round-to"),
    (re.compile(r"\b(ratio|atol|scope|reinit|norm|round_to)=('?)([\w\-]+(?:\.[\w\-]+)*)\2"),
     lambda m: f"--{m[1].replace('_', '-')} {m[3]}"),
]


def cli_words(message) -> str:
    """``message`` with the library's keyword arguments replaced by the CLI's flags."""
    text = str(message)
    for pattern, replacement in _WORDS:
        text = pattern.sub(replacement, text)
    return text


class _Gate(logging.Filter):
    """Lets shrink's records through, and other libraries' only from ``threshold`` up."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "shrink" or record.name.startswith("shrink.") or record.levelno >= self.threshold


@contextmanager
def quiet_libraries(*, verbose: bool = False, debug: bool = False) -> Iterator[None]:
    """Route logging for one CLI command: shrink's lines to stderr, other libraries' only with -v/--debug.

    Some libraries (torch) attach their own handlers to their loggers; a filter on every handler
    there is, for the duration, keeps their records off the terminal too.
    """
    import torch  # noqa: F401 - torch configures its loggers on import; gate them after that

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shrink: %(levelname)s: %(message)s" if not debug
                                           else "%(levelname)s %(name)s: %(message)s"))
    ours, root = logging.getLogger("shrink"), logging.getLogger()
    saved = (ours.level, ours.propagate, root.level)
    ours.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    ours.addHandler(handler)
    ours.propagate = False
    # Other libraries: with -v their warnings, with --debug everything; otherwise nothing. A
    # NullHandler on the root keeps Python's last-resort handler from printing their warnings.
    other = logging.StreamHandler(sys.stderr) if (verbose or debug) else logging.NullHandler()
    other.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(other)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    gate = _Gate(logging.DEBUG if debug else logging.WARNING if verbose else logging.CRITICAL + 1)
    loggers = [root, *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    gated = [h for lg in loggers for h in lg.handlers if h is not handler]
    for h in gated:
        h.addFilter(gate)
    logging.captureWarnings(True)  # Python warnings become records of "py.warnings", gated like the rest
    try:
        with warnings.catch_warnings():
            if not (verbose or debug):
                warnings.simplefilter("ignore")
            yield
    finally:
        logging.captureWarnings(False)
        for h in gated:
            h.removeFilter(gate)
        ours.removeHandler(handler)
        root.removeHandler(other)
        ours.setLevel(saved[0])
        ours.propagate = saved[1]
        root.setLevel(saved[2])
