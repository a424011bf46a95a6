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
    (re.compile(r"\breinit='initial'"), "--reinit initial"),
]


def cli_words(message) -> str:
    """``message`` with the library's keyword arguments replaced by the CLI's flags."""
    text = str(message)
    for pattern, replacement in _WORDS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def quiet_libraries(*, verbose: bool = False, debug: bool = False) -> Iterator[None]:
    """Route logging for one CLI command: shrink's lines to stderr, other libraries' only with -v/--debug."""
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
    logging.captureWarnings(True)  # Python warnings become records of "py.warnings", shown like the rest
    try:
        with warnings.catch_warnings():
            if not (verbose or debug):
                warnings.simplefilter("ignore")
            yield
    finally:
        logging.captureWarnings(False)
        ours.removeHandler(handler)
        root.removeHandler(other)
        ours.setLevel(saved[0])
        ours.propagate = saved[1]
        root.setLevel(saved[2])
