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
    copy. A failed fetch leaves ``dst`` as it was and no scratch behind.

    An earlier folder is renamed into the scratch folder before the new one takes its place (a
    rename cannot replace a folder), and renamed back if that fails: the earlier copy is never
    deleted before the new one is in place, as in ``atomic_directory``. If even the rename back
    fails, the scratch folder stays and the error's note says where the earlier copy is.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=dst))
    keep_scratch = False
    try:
        got = Path(fetch(scratch))
        target = dst / got.name
        earlier = None
        if target.is_dir() or (target.exists() and got.is_dir()):
            earlier = Path(tempfile.mkdtemp(prefix=".earlier-", dir=scratch)) / got.name
            os.rename(target, earlier)
        try:
            os.replace(got, target)
        except BaseException as exc:
            if earlier is not None:
                try:
                    os.rename(earlier, target)
                except OSError as restore:
                    keep_scratch = True
                    exc.add_note(
                        f"fetch_into: the earlier {target} could not be moved back either "
                        f"({restore}); it is kept at {earlier}: move it back, or fetch again"
                    )
            raise
        return target
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
