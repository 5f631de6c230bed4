"""zoo._atomic: the one atomic writer every file zoo writes goes through."""

import os

import pytest

from zoo._atomic import atomic_open, atomic_path, atomic_write


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "card.json"
    atomic_write(path, "first")
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["card.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "weights.eqx"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["weights.eqx"]


def test_a_failing_rename_removes_the_temporary(tmp_path):
    def refuse(tmp, dest):
        raise OSError("read-only file system")

    with pytest.raises(OSError, match="read-only"):
        with atomic_open(tmp_path / "x.txt", "w", replace=refuse) as f:
            f.write("text")
    assert os.listdir(tmp_path) == []


def test_atomic_path_keeps_the_suffix_for_writers_that_choose_a_format_by_it(tmp_path):
    path = tmp_path / "training.png"
    with atomic_path(path) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png bytes")
    assert path.read_bytes() == b"png bytes"
    with pytest.raises(ValueError, match="boom"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"torn")
            raise ValueError("boom")
    assert path.read_bytes() == b"png bytes"
    assert os.listdir(tmp_path) == ["training.png"]


def test_atomic_open_refuses_modes_it_cannot_make_atomic(tmp_path):
    with pytest.raises(ValueError, match="`mode` must be 'wb' or 'w'"):
        with atomic_open(tmp_path / "x", "ab"):
            pass
