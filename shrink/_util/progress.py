"""One progress helper: a rich bar on a terminal, plain lines when output goes to a file or pipe."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(show: bool, total: int | None, label: str) -> Iterator[Callable[..., None]]:
    """Yields ``advance(description=None)``; a no-op when ``show`` is False.

    Without a terminal (CI logs, ``nohup``, a pipe) a bar would print nothing useful, so each
    step is one plain line on stderr instead: ``label: 3/12 onnxruntime cpu b1``.
    """
    if not show:
        yield lambda description=None: None
        return
    if not sys.stderr.isatty():
        done = 0

        def line(description: str | None = None) -> None:
            nonlocal done
            done += 1
            print(f"{label}: {done}/{total if total is not None else '?'}{' ' + description if description else ''}",
                  file=sys.stderr, flush=True)

        yield line
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(description: str | None = None) -> None:
            bar.update(task, advance=1, **({"description": description} if description else {}))

        yield advance
