"""Atomic file-system writes: readers see the old state or the new one, never a half-write."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from recflow.faults import point


def safe_name(text: str) -> str:
    """A file-system-safe folder name for a DAG run id such as 'manual__2026-11-27T22:00:00+00:00'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


@contextlib.contextmanager
def atomic_directory(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a scratch folder beside ``final``; on success it is renamed to ``final``.

    On error the scratch folder is removed and ``final`` is untouched. With ``replace``, an
    existing ``final`` (e.g. from a retried task) is swapped out and deleted; without it an
    existing ``final`` raises FileExistsError before anything is written.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not replace:
        raise FileExistsError(f"{final} already exists; refusing to overwrite it")
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield scratch
        point(f"atomic_directory:{final.name}")
        if final.exists():
            if not replace:
                raise FileExistsError(f"{final} appeared while writing; refusing to overwrite it")
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.rename(final, trash / "old")
            os.rename(scratch, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(scratch, final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        point(f"atomic_write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def copy_tree_atomic(source: Path, final: Path) -> None:
    """Copy a folder so that ``final`` appears complete in one rename; ``final`` must not exist."""
    with atomic_directory(final, replace=False) as scratch:
        shutil.copytree(source, scratch, dirs_exist_ok=True)


def fetch_into(dst: Path, fetch: Callable[[Path], Path]) -> Path:
    """``fetch(scratch)`` writes one file or folder into a scratch folder inside ``dst`` and
    returns its path; it is then moved to ``dst/<its name>``, replacing an earlier (retried)
    copy. A failed fetch leaves ``dst`` as it was and no scratch behind."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=dst))
    try:
        got = Path(fetch(scratch))
        target = dst / got.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(got, target)
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
