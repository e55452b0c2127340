from __future__ import annotations

import pytest

from recflow.storage import atomic_directory, atomic_write_text, copy_tree_atomic, safe_name


def test_atomic_directory_appears_whole(tmp_path):
    final = tmp_path / "run" / "data"
    with atomic_directory(final) as scratch:
        (scratch / "a.txt").write_text("1")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "1"


def test_failure_leaves_nothing_and_keeps_old(tmp_path):
    final = tmp_path / "data"
    with atomic_directory(final) as scratch:
        (scratch / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final) as scratch:
        (scratch / "new.txt").write_text("new")
        raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_rerun_replaces(tmp_path):
    final = tmp_path / "data"
    for text in ("first", "second"):
        with atomic_directory(final) as scratch:
            (scratch / "f.txt").write_text(text)
    assert (final / "f.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_copy_tree_refuses_to_overwrite(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "saved_model.pb").write_bytes(b"x")
    copy_tree_atomic(src, tmp_path / "models" / "1")
    assert (tmp_path / "models" / "1" / "saved_model.pb").read_bytes() == b"x"
    with pytest.raises(FileExistsError):
        copy_tree_atomic(src, tmp_path / "models" / "1")


def test_atomic_write_text_and_safe_name(tmp_path):
    path = tmp_path / "x" / "models.config"
    atomic_write_text(path, "a")
    atomic_write_text(path, "b")
    assert path.read_text() == "b"
    assert [p.name for p in path.parent.iterdir()] == ["models.config"]
    assert safe_name("manual__2026-11-27T22:00:00+00:00") == "manual__2026-11-27T22_00_00_00_00"
