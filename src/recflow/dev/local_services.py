"""Start and stop the local model server as a subprocess (demo, tests, `make serve`)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from recflow.errors import ServerUnavailable
from recflow.net import port_open
from recflow.serving.model_config import EMPTY_MODEL_CONFIG
from recflow.storage import atomic_write_text


class ModelServerProcess:
    """``recflow-model-server`` with TF Serving's flags, in the background, logging to a file."""

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
        self.port = port
        self.log_file = Path(log_file)
        self.poll_seconds = poll_seconds
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ModelServerProcess:
        if not self.model_config_file.exists():
            atomic_write_text(self.model_config_file, EMPTY_MODEL_CONFIG)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "recflow.serving.server",
            f"--port={self.port}",
            f"--model_config_file={self.model_config_file}",
            f"--model_config_file_poll_wait_seconds={self.poll_seconds}",
            f"--file_system_poll_wait_seconds={self.poll_seconds}",
            # At start-up nothing is loaded yet, so without this TF Serving (and we) would
            # refuse a config file that already names the stable label.
            "--allow_version_labels_for_unavailable_models=true",
            *self.extra_args,
        ]
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailable(
                    f"the local model server exited with code {self.process.returncode} at "
                    f"start; see {self.log_file}"
                )
            if port_open("127.0.0.1", self.port):
                return self
            time.sleep(0.2)
        self.stop()
        raise ServerUnavailable(
            f"the local model server did not listen on port {self.port} within {timeout:.0f} s; "
            f"see {self.log_file}"
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> ModelServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
