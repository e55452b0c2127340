"""Start a model server subprocess, wait until it answers, stop it (demo, tests, sandboxes).

``ServerProcess`` runs any model server command line (``recflow-model-server`` or
``tensorflow_model_server``) with its output in a log file, and counts it ready once its
gRPC port accepts connections (the server opens the port only after loading its initial
config, as TF Serving does). ``ModelServerProcess`` is ``recflow-model-server`` over a model
config file, with the polling flags the local platform uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from recflow.errors import ServerUnavailable
from recflow.net import free_port, port_open
from recflow.serving.model_config import EMPTY_MODEL_CONFIG
from recflow.storage import atomic_write_text

__all__ = ["EMPTY_MODEL_CONFIG", "ModelServerProcess", "ServerProcess", "free_port", "port_open"]
LOCAL_SERVER_NAME = "recflow-model-server"
START_POLL_SECONDS = 0.1  # how often start() looks at the port and the process


def local_server_argv(port: int, *flags: str) -> list[str]:
    """The command line of ``recflow-model-server`` on ``port`` in this Python environment."""
    return [sys.executable, "-m", "recflow.serving.server", f"--port={port}", *flags]


def model_server_argv(
    port: int, model_config_file: Path, poll_seconds: float = 1.0, *flags: str
) -> list[str]:
    """The local server over a model config file it polls (and the base paths) every
    ``poll_seconds``: what the demo, ``make serve`` and the tests run."""
    return local_server_argv(
        port,
        f"--model_config_file={model_config_file}",
        f"--model_config_file_poll_wait_seconds={poll_seconds:g}",
        f"--file_system_poll_wait_seconds={poll_seconds:g}",
        # At start-up nothing is loaded yet, so without this TF Serving (and we) would
        # refuse a config file that already names the stable label.
        "--allow_version_labels_for_unavailable_models=true",
        *flags,
    )


class ServerProcess:
    """One model server subprocess (``argv`` must make it listen on ``port``), logging to
    ``log_file``; ``start()`` returns once the port accepts connections and raises
    ServerUnavailable (with the log's last lines) if the process exits or the timeout passes.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        log_file: Path,
        name: str = LOCAL_SERVER_NAME,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.log_file = Path(log_file)
        self.name = name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def start(self, timeout: float = 60.0) -> Self:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env} if self.env is not None else None
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd
            )
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise ServerUnavailable(
                    f"{self.name} exited with code {self.process.returncode} before listening "
                    f"on port {self.port}; see {self.log_file}, which ends:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerUnavailable(
                    f"{self.name} did not listen on port {self.port} within {timeout:.0f} s "
                    f"(stopped it); see {self.log_file}, which ends:\n{self.log_tail()}"
                )
            time.sleep(START_POLL_SECONDS)
        return self

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (the server unloads and exits), SIGKILL after ``grace`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ModelServerProcess(ServerProcess):
    """``recflow-model-server`` over ``model_config_file`` (written empty if missing), polling
    it and the model base paths every ``poll_seconds``."""

    def __init__(
        self,
        model_config_file: Path,
        *,
        port: int,
        log_file: Path,
        poll_seconds: float = 1.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model_config_file = Path(model_config_file)
        self.poll_seconds = poll_seconds
        self.extra_args = extra_args
        argv = model_server_argv(port, self.model_config_file, poll_seconds, *extra_args)
        super().__init__(argv, port=port, log_file=log_file)

    def start(self, timeout: float = 60.0) -> Self:
        if not self.model_config_file.exists():
            atomic_write_text(self.model_config_file, EMPTY_MODEL_CONFIG)
        return super().start(timeout)
