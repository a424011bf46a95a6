"""Atomic writes: a safe --force swap, stale temporary folders cleaned, normal permissions."""

from __future__ import annotations

import os
import stat

import pytest
import torch

import shrink
from shrink._util import atomic
from models import TinyMLP

DEAD_PID = 999_999_999  # above any pid_max: no such process


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_overwrite_swap_keeps_the_old_folder_if_the_new_one_cannot_move_in(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    real = os.replace

    def failing(src, dst):
        if "shrink-tmp" in str(src) or ".out." in str(src) and "shrink-old" not in str(src):
            raise OSError("disk full (simulated)")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OSError, match="simulated"):
        with atomic.atomic_folder(out, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert (out / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_swap_replaces_the_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with atomic.atomic_folder(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_temp_folders_of_a_killed_run_are_removed(tmp_path):
    stale = tmp_path / f".out.shrink-tmp-{DEAD_PID}-abc123"
    (stale / f".model.onnx.shrink-tmp-{DEAD_PID}-x").mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    foreign = tmp_path / ".out.something-else"  # not shrink's naming: never touched
    foreign.mkdir()
    shrink.save(shrink.compress(TinyMLP(), torch.randn(2, 2)), tmp_path / "out")
    assert not stale.exists()
    assert foreign.exists()


def test_an_old_folder_left_aside_by_a_kill_is_put_back(tmp_path):
    aside = tmp_path / f".out.shrink-old-{DEAD_PID}-abc123"
    aside.mkdir()
    (aside / "keep.txt").write_text("old")
    with pytest.raises(shrink.ShrinkValueError, match="already exists"):
        atomic.check_destination(tmp_path / "out", overwrite=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "old"


def test_a_live_runs_temp_folder_is_left_alone(tmp_path):
    live = tmp_path / f".out.shrink-tmp-{os.getpid()}-abc123"
    live.mkdir()
    atomic.check_destination(tmp_path / "out", overwrite=False)
    assert live.exists()


def test_saved_folder_and_files_have_the_umask_permissions(tmp_path, umask_022):
    folder = shrink.save(shrink.compress(TinyMLP(), torch.randn(2, 2)), tmp_path / "out")
    assert _mode(folder) == 0o755
    assert {p.name: _mode(p) for p in folder.iterdir()} == {"model.safetensors": 0o644, "plan.json": 0o644}


def test_atomic_file_permissions_and_refusal(tmp_path, umask_022):
    target = tmp_path / "notes.md"
    with atomic.atomic_file(target, overwrite=False) as tmp:
        tmp.write_text("one")
    assert _mode(target) == 0o644
    with pytest.raises(shrink.ShrinkValueError, match="already exists"):
        with atomic.atomic_file(target, overwrite=False) as tmp:
            tmp.write_text("two")
    assert target.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]
