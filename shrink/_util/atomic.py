"""Write under a temporary name and rename into place, so a failure or a kill leaves nothing half-done.

Temporary names are shrink's own: ``.NAME.shrink-tmp-PID-XXXX`` for what is being written and
``.NAME.shrink-old-PID-XXXX`` for an old folder moved aside while ``overwrite`` swaps in the new
one. A process killed mid-way leaves such a name behind; the next write to the same destination
removes those whose process is gone (and puts back an old folder a kill left aside).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ShrinkTypeError, ShrinkValueError

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\.(?P<name>.+)\.shrink-(?P<kind>tmp|old)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no read-only way elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _normal_mode(path: Path) -> None:
    """Give what mkdtemp/mkstemp created (0700/0600) the permissions a plain mkdir/open would.

    Everything inside a folder too: some writers (safetensors) create their files 0600.
    """
    mask = umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def clean_stale(parent: Path, name: str) -> list[Path]:
    """Remove temporary files and folders shrink left for ``parent/name`` in a run that was killed.

    An old folder moved aside by a swap that never finished is renamed back when ``name`` is
    missing (the kill came between the two renames), else removed. Returns what was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in sorted(entries):
        m = _TEMP.match(entry.name)
        if not m or m["name"] != name or _pid_alive(int(m["pid"])):
            continue
        target = parent / name
        try:
            if m["kind"] == "old" and not target.exists() and not target.is_symlink():
                os.replace(entry, target)
                log.warning("put back %s, which an interrupted --force/overwrite had moved aside", target)
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
            log.info("removed %s, left behind by an interrupted shrink run", entry)
        except OSError as exc:
            log.warning("could not remove %s (left by an interrupted shrink run): %s; delete it yourself", entry, exc)
    return removed


def check_destination(path: str | os.PathLike, *, overwrite: bool, hint: str = "pass overwrite=True",
                      kind: str = "folder") -> Path:
    """Refuse, before any work, a destination that cannot be written as ``kind`` ("folder" or "file").

    Temporary files that a killed shrink run left for this destination are cleaned up first.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ShrinkTypeError(f"the destination must be a path (str or pathlib.Path); got {type(path).__name__}")
    path = Path(path)
    if str(path) in ("", "."):
        raise ShrinkValueError(f"the destination {str(path)!r} names no {kind}; give a new {kind} name")
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise ShrinkValueError(
                f"cannot write {str(path)!r}: {str(ancestor)!r} is a file, not a folder. "
                f"Choose a {kind} whose parent is a folder."
            )
    if path.parent.is_dir():
        clean_stale(path.parent, path.name)
    if kind == "folder" and _empty_folder(path):
        pass  # what `mkdir out` made for us: written into, as Hugging Face's save_pretrained does
    elif path.exists() or path.is_symlink():
        if not overwrite:
            raise ShrinkValueError(f"{str(path)!r} already exists; choose another {kind} or {hint} to replace it")
        is_dir = path.is_dir() and not path.is_symlink()
        if kind == "folder" and not is_dir:
            raise ShrinkValueError(
                f"{str(path)!r} is a file, not a folder; replacing it would delete it. Choose another folder "
                "name, or remove the file yourself."
            )
        if kind == "file" and is_dir:
            raise ShrinkValueError(
                f"{str(path)!r} is a folder, not a file; replacing it would delete it. Choose a file name, "
                "or remove the folder yourself."
            )
    existing = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ShrinkValueError(f"cannot write {str(path)!r}: no permission to write in {str(existing)!r}; "
                               "choose a folder you can write to")
    return path


def _empty_folder(path: Path) -> bool:
    if not path.is_dir() or path.is_symlink():
        return False
    try:
        return next(path.iterdir(), None) is None
    except OSError:
        return False


def temp_dir(parent: Path, name: str) -> Path:
    """A new private folder beside ``parent/name``, named so that `clean_stale` knows it."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.shrink-tmp-{os.getpid()}-", dir=parent))


def make_parents(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ShrinkValueError(f"cannot create the folder {str(path.parent)!r} for {str(path)!r}: {exc}") from exc


def _swap_in(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``; an old ``path`` is moved aside first and deleted only afterwards.

    At every moment either the old or the new one is complete under its name (or the old one is
    under its aside name, which `clean_stale` puts back).
    """
    if not (path.exists() or path.is_symlink()):
        os.replace(new, path)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.shrink-old-{os.getpid()}-", dir=path.parent))
    os.replace(path, aside)  # a folder onto an empty folder: allowed
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(aside, path)
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


@contextmanager
def atomic_folder(folder: str | os.PathLike, *, overwrite: bool, hint: str = "pass overwrite=True") -> Iterator[Path]:
    """Yields a temporary folder beside ``folder``; on success it replaces ``folder``, else vanishes."""
    folder = check_destination(folder, overwrite=overwrite, hint=hint, kind="folder")
    make_parents(folder)
    try:
        tmp = temp_dir(folder.parent, folder.name)
    except OSError as exc:
        raise ShrinkValueError(f"cannot write beside {str(folder)!r}: {exc}") from exc
    try:
        yield tmp
        _normal_mode(tmp)
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool, hint: str = "pass overwrite=True") -> Iterator[Path]:
    """Yields a temporary file name beside ``path``; on success it replaces ``path``, else vanishes."""
    path = check_destination(path, overwrite=overwrite, hint=hint, kind="file")
    make_parents(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.shrink-tmp-{os.getpid()}-", dir=path.parent)
    except OSError as exc:
        raise ShrinkValueError(f"cannot write beside {str(path)!r}: {exc}") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _normal_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
