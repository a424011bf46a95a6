"""One progress bar helper (rich), so long runs show progress and quiet runs show nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(show: bool, total: int | None, label: str) -> Iterator[Callable[..., None]]:
    """Yields ``advance(description=None)``; a no-op when ``show`` is False."""
    if not show:
        yield lambda description=None: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(description: str | None = None) -> None:
            bar.update(task, advance=1, **({"description": description} if description else {}))

        yield advance
