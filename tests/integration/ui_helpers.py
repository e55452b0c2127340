"""Helpers for the real-browser test: Airflow and MLflow servers in subprocesses, the Airflow
REST API with a JWT, and headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recflow.dev.launch import http_ok, stop_group

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "ui"


@dataclass
class Service:
    """A server in its own process group (``airflow standalone`` has four children)."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def stop(self) -> None:
        stop_group(self.process, grace=20)


def start_service(
    name: str,
    argv: list[str],
    env: dict[str, str],
    url: str,
    health: str,
    log_path: Path,
    timeout: float,
) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = Service(name, process, url, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log_tail()}")
        if http_ok(url + health):
            return service
        time.sleep(1.0)
    service.stop()
    raise RuntimeError(
        f"{name} did not answer {url + health} in {timeout:.0f} s:\n{service.log_tail()}"
    )


def python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


# ---------------------------------------------------------------------------------------------
# Airflow REST API


def _request(url: str, *, token: str | None = None, body: Any = None, timeout: float = 10.0) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read().decode() or "null")


def airflow_token(base_url: str, user: str, password: str) -> str:
    return str(
        _request(f"{base_url}/auth/token", body={"username": user, "password": password})[
            "access_token"
        ]
    )


def airflow_get(base_url: str, token: str, path: str) -> Any:
    return _request(f"{base_url}/api/v2/{path.lstrip('/')}", token=token)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
    """Poll ``check`` until it returns something truthy; errors while polling are retried."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (urllib.error.URLError, OSError, KeyError, ValueError) as error:
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")


def task_states(base_url: str, token: str, dag_id: str, run_id: str) -> dict[str, str]:
    quoted = urllib.request.quote(run_id, safe="")
    data = airflow_get(base_url, token, f"dags/{dag_id}/dagRuns/{quoted}/taskInstances")
    return {ti["task_id"]: ti["state"] for ti in data["task_instances"]}


def task_log(base_url: str, token: str, dag_id: str, run_id: str, task_id: str) -> str:
    quoted = urllib.request.quote(run_id, safe="")
    try:
        data = airflow_get(
            base_url, token, f"dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/logs/1"
        )
    except (urllib.error.URLError, OSError) as error:
        return f"(no log: {error})"
    return json.dumps(data)[-3000:]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.update(extra)
    return env
