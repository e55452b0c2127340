"""Fault-injection points, so that tests can kill a task at a chosen moment (crash safety).

``point(name)`` does nothing unless the environment names it: with ``RECFLOW_FAULT_POINT=name``
(several: comma-separated) and ``RECFLOW_FAULT_DIR=<folder>``, the process writes
``<folder>/<name>.reached`` and then blocks until it is killed. A test waits for that file and
sends SIGKILL: the kill lands exactly there, without sleeps or races deciding where.

The points (where a task can die and the re-run must still end in the state of a clean run):
    atomic_directory:<final folder name>   a folder is complete in its scratch, not yet renamed
    atomic_write:<file name>               a file's new text is written, not yet renamed
    export:logged                          the SavedModel is uploaded to MLflow, run not tagged
    register:created                       the version exists (pending), not marked complete
    register:complete                      the version is complete, alias not yet set
Cheap when unused: one environment lookup.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

ENV_POINT = "RECFLOW_FAULT_POINT"
ENV_DIR = "RECFLOW_FAULT_DIR"


def point(name: str) -> None:
    wanted = os.environ.get(ENV_POINT)
    if not wanted or name not in {p.strip() for p in wanted.split(",")}:
        return
    folder = Path(os.environ.get(ENV_DIR) or ".")
    folder.mkdir(parents=True, exist_ok=True)
    safe = name.replace("/", "_")
    (folder / f"{safe}.reached").write_text(str(os.getpid()), encoding="utf-8")
    threading.Event().wait()  # until SIGKILL
