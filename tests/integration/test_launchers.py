"""`make mlflow` stops cleanly when its launcher alone is signalled (as `timeout` or a
supervisor does), not only on a terminal's Ctrl-C to the whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recflow.dev.launch import wait_until
from recflow.net import free_port, port_open

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def _live_members(pgid: int) -> list[str]:
    """Processes of group ``pgid`` that are not zombies (their parent has not reaped them)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(stat.parent.name)
    return members


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signalled_mlflow_launcher_leaves_no_child_and_frees_its_port(tmp_path, sig):
    port = free_port()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "recflow.dev.launch", "mlflow", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "RECFLOW_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: the signal below reaches the launcher alone, as from a supervisor.
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: port_open("127.0.0.1", port), timeout=180, interval=0.5)
        (server,) = _children(launcher.pid)
        assert _live_members(server), "the MLflow server runs in its own process group"

        launcher.send_signal(sig)
        launcher.wait(timeout=120)

        # A SIGKILLed process needs a moment to be reaped; the wait only bounds a failure.
        assert wait_until(lambda: not _live_members(server), timeout=30, interval=0.2), (
            _live_members(server)
        )
        assert not port_open("127.0.0.1", port)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
