"""The model-server process helper with stand-in commands (no TensorFlow): ready once the port
accepts connections, a process that exits or never listens is reported with its log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from recflow.errors import ServerUnavailable
from recflow.serving.server_process import (
    ModelServerProcess,
    ServerProcess,
    free_port,
    local_server_argv,
    port_open,
)

pytestmark = pytest.mark.unit

LISTEN = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "print('listening', flush=True)\n"
    "while True: s.accept()[0].close()\n"
)


def test_start_returns_once_the_port_accepts_and_stop_ends_the_process(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-c", LISTEN, str(port)]
    with ServerProcess(argv, port=port, log_file=tmp_path / "logs" / "s.log") as server:
        assert port_open("127.0.0.1", port) and server.address == f"127.0.0.1:{port}"
        assert server.process is not None and server.process.poll() is None
    assert server.process.poll() is not None  # terminated (SIGTERM) on leaving the block
    assert "listening" in server.log_text()


def test_a_process_that_exits_is_reported_with_its_code_and_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('bad flag --x'); raise SystemExit(3)"]
    server = ServerProcess(argv, port=free_port(), log_file=tmp_path / "s.log", name="fake")
    with pytest.raises(ServerUnavailable, match=r"fake exited with code 3") as info:
        server.start(timeout=60)
    assert "bad flag --x" in str(info.value) and str(tmp_path / "s.log") in str(info.value)


def test_a_process_that_never_listens_is_stopped_and_reported(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"]
    server = ServerProcess(argv, port=free_port(), log_file=tmp_path / "s.log")
    with pytest.raises(ServerUnavailable, match="did not listen on port"):
        server.start(timeout=0)  # the deadline has passed at the first look
    assert server.process is not None and server.process.poll() is not None


def test_model_server_process_runs_the_local_server_with_the_platform_flags(
    tmp_path: Path,
) -> None:
    config = tmp_path / "models.config"
    server = ModelServerProcess(config, port=1234, log_file=tmp_path / "s.log", poll_seconds=2)
    assert server.argv[:5] == local_server_argv(1234, f"--model_config_file={config}")
    assert server.argv[1:3] == ["-m", "recflow.serving.server"]
    assert "--allow_version_labels_for_unavailable_models=true" in server.argv
    assert "--file_system_poll_wait_seconds=2" in server.argv
