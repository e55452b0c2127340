from __future__ import annotations

import os
from pathlib import Path

import pytest

from recflow.storage import (
    atomic_directory,
    atomic_write_text,
    copy_tree_atomic,
    fetch_into,
    safe_name,
)


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


def _fetch_folder(version: str):
    """A fetch that writes folder ``model`` holding one file named ``version``."""

    def fetch(scratch):
        (scratch / "model").mkdir()
        (scratch / "model" / version).write_text(version)
        return scratch / "model"

    return fetch


def test_fetch_into_replaces_an_earlier_copy_and_leaves_no_scratch(tmp_path):
    first = fetch_into(tmp_path, _fetch_folder("v1"))
    second = fetch_into(tmp_path, _fetch_folder("v2"))
    assert first == second == tmp_path / "model"
    assert sorted(p.name for p in second.iterdir()) == ["v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_fetch_keeps_the_earlier_copy(tmp_path):
    def good(scratch):
        (scratch / "card.md").write_text("old")
        return scratch / "card.md"

    def broken(scratch):
        (scratch / "card.md").write_text("half")
        raise OSError("connection reset")

    fetch_into(tmp_path, good)
    with pytest.raises(OSError, match="connection reset"):
        fetch_into(tmp_path, broken)
    assert (tmp_path / "card.md").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.md"]


def _refusing(move, target: Path, message: str):
    """``move`` (os.replace or os.rename) that raises OSError(message) for moves onto target."""

    def refuse(src, dst):
        if Path(dst) == target:
            raise OSError(message)
        return move(src, dst)

    return refuse


def test_a_failed_swap_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    fetch_into(tmp_path, _fetch_folder("v1"))
    monkeypatch.setattr(os, "replace", _refusing(os.replace, tmp_path / "model", "disk full"))
    with pytest.raises(OSError, match="disk full"):
        fetch_into(tmp_path, _fetch_folder("v2"))
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["v1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_when_the_earlier_folder_cannot_go_back_it_is_kept_and_named(tmp_path, monkeypatch):
    fetch_into(tmp_path, _fetch_folder("v1"))
    target = tmp_path / "model"
    monkeypatch.setattr(os, "replace", _refusing(os.replace, target, "disk full"))
    monkeypatch.setattr(os, "rename", _refusing(os.rename, target, "read-only file system"))
    with pytest.raises(OSError, match="disk full") as caught:
        fetch_into(tmp_path, _fetch_folder("v2"))
    (note,) = caught.value.__notes__
    assert "read-only file system" in note
    kept = Path(note.split("it is kept at ")[1].split(":")[0])
    assert sorted(p.name for p in kept.iterdir()) == ["v1"]  # nothing lost
    assert kept.is_relative_to(tmp_path)


def test_a_folder_replaces_an_earlier_file_of_the_same_name(tmp_path):
    (tmp_path / "model").write_text("a file from an older layout")

    def fetch(scratch):
        (scratch / "model").mkdir()
        (scratch / "model" / "saved_model.pb").write_text("pb")
        return scratch / "model"

    got = fetch_into(tmp_path, fetch)
    assert sorted(p.name for p in got.iterdir()) == ["saved_model.pb"]
