"""Write a folder under a temporary name and rename it into place, so failures leave nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ShrinkValueError


@contextmanager
def atomic_folder(folder: str | os.PathLike, *, overwrite: bool, hint: str = "pass overwrite=True") -> Iterator[Path]:
    """Yields a temporary folder beside ``folder``; on success it replaces ``folder``, else vanishes."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise ShrinkValueError(f"{str(folder)!r} already exists; choose another folder or {hint} to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
