"""Atomic writes: replace in one step, keep usual permissions, leave nothing behind on failure."""

import os

import pytest

from medseg.utils import atomic_path, atomic_write_text


def test_atomic_writes_have_normal_permissions(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    mode = (tmp_path / "a.txt").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]
