"""Fixtures for tests that run ``recflow-model-server`` in a subprocess on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _savedmodel_fixture import write_savedmodel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    address: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="session")
def model_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two distinguishable SavedModels ("A" with warmup requests, "B" without)."""
    base = tmp_path_factory.mktemp("savedmodels")
    return {
        "A": write_savedmodel(base / "A", "A", warmup_users=("u1", "nobody")),
        "B": write_savedmodel(base / "B", "B"),
    }


def _wait_ready(server: RunningServer, timeout: float) -> None:
    import grpc

    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(server.address)
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"model server exited early:\n{server.log()}")
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return
            except grpc.FutureTimeoutError:
                continue
    finally:
        channel.close()
    raise RuntimeError(f"model server not listening after {timeout}s:\n{server.log()}")


@pytest.fixture()
def start_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start the server with extra flags; every server started is stopped (SIGTERM) after."""
    started: list[RunningServer] = []

    def start(*flags: str, timeout: float = 60.0) -> RunningServer:
        port = free_port()
        log_path = tmp_path / f"server-{port}.log"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "DO_NOT_TRACK": "true"}
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "recflow.serving.server", "--port", str(port), *flags],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=ROOT,
            )
        server = RunningServer(process, f"127.0.0.1:{port}", log_path)
        started.append(server)
        _wait_ready(server, timeout)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
