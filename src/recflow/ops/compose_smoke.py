"""`make compose-smoke`: prove the compose stack on a Docker host, end to end.

    python -m recflow.ops.compose_smoke [--cpu] [--keep] [--env-file .env]

1. checks there is a Docker engine (``docker info``) and a compose command, and that the
   published ports are free: fails at once, saying what is missing, where there is none;
2. builds and starts the stack (docker-compose.yml, plus docker-compose.cpu.yml with
   ``--cpu``) under its own project name, so its volumes are not yours;
3. waits until the Airflow API, MLflow and TF Serving answer on their published ports;
4. signs in to Airflow's REST API (``POST /auth/token``, the FAB auth manager the compose file
   configures), unpauses and triggers ``recsys_training`` (``/api/v2``) with a small
   synthetic data set, and waits for the run to succeed (on failure: the failed tasks);
5. asks TF Serving over gRPC, with the project's client, for label ``stable`` and prints the
   top-10 and the served versions;
6. tears the stack down with its volumes unless ``--keep``.

The REST part (:class:`AirflowApi`) and the gRPC part (:func:`stable_top_k`) are plain
functions of a URL/address: tests/integration/test_compose_smoke.py runs them against a local
Airflow API server with the FAB auth manager and against the local model server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recflow.errors import RecflowError
from recflow.jsontypes import JSONObject

ROOT = Path(__file__).resolve().parents[3]
DAG_ID = "recsys_training"
PROJECT = "recflow-smoke"
# Small enough to train in minutes on CPU workers; the gate's lift floor off for a first run.
SMOKE_CONF: JSONObject = {
    "epochs": 2,
    "synthetic_users": 300,
    "synthetic_items": 200,
    "min_interactions": 300,
    "min_lift_over_popularity": 0,
}


class SmokeFailed(RecflowError):
    """A step of the smoke run failed; the message says which and what to do."""


# ---------------------------------------------------------------------------------------------
# Airflow REST API (Airflow 3: /api/v2, JWT from /auth/token)


@dataclass
class AirflowApi:
    base_url: str  # e.g. http://127.0.0.1:8080
    username: str
    password: str
    timeout: float = 30.0
    _token: str | None = field(default=None, repr=False)

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url.rstrip("/") + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode() or "null"
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise SmokeFailed(
                f"Airflow API {method} {path}: HTTP {error.code}, expected success; {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            raise SmokeFailed(
                f"Airflow API {method} {self.base_url}{path} unreachable: {error}"
            ) from None
        return json.loads(text)

    def token(self) -> str:
        if self._token is None:
            answer = self._request(
                "POST",
                "/auth/token",
                {"username": self.username, "password": self.password},
                auth=False,
            )
            self._token = str(answer["access_token"])
        return self._token

    def version(self) -> str:
        return str(self._request("GET", "/api/v2/version", auth=False)["version"])

    def dag(self, dag_id: str) -> JSONObject:
        return dict(self._request("GET", f"/api/v2/dags/{dag_id}"))

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def pool(self, name: str) -> JSONObject:
        return dict(self._request("GET", f"/api/v2/pools/{urllib.parse.quote(name, safe='')}"))

    def trigger(self, dag_id: str, conf: JSONObject) -> str:
        run = self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}
        )
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        quoted = urllib.parse.quote(run_id, safe="")
        return str(self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        quoted = urllib.parse.quote(run_id, safe="")
        data = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in data["task_instances"]}

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float,
        poll: float = 10.0,
        progress: Callable[[str], None] = print,
    ) -> dict[str, str | None]:
        """Wait until the run succeeds (task states returned) or fail saying which tasks failed."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            state = self.run_state(dag_id, run_id)
            if state != last:
                progress(f"compose-smoke: {dag_id} {run_id}: {state}")
                last = state
            if state == "success":
                return self.task_states(dag_id, run_id)
            if state == "failed":
                tasks = self.task_states(dag_id, run_id)
                failed = sorted(t for t, s in tasks.items() if s in ("failed", "upstream_failed"))
                raise SmokeFailed(
                    f"{dag_id} run {run_id} failed; failed tasks: {failed}. Read their logs in "
                    "the Airflow UI (or `docker compose logs airflow-worker`)"
                )
            if time.monotonic() > deadline:
                raise SmokeFailed(
                    f"{dag_id} run {run_id} still {state} after {timeout:.0f} s; expected "
                    "success. Check the scheduler and worker logs"
                )
            time.sleep(poll)


# ---------------------------------------------------------------------------------------------
# TF Serving over gRPC, with the project's client


@dataclass(frozen=True)
class Served:
    model: str
    stable_version: int
    versions: list[tuple[int, str]]  # (version, state) of every version the server knows
    user: str
    items: list[tuple[str, str, float]]  # (item id, title, score), best first


def stable_top_k(address: str, model: str, user: str, k: int = 10) -> Served:
    from recflow.serving.client import ServingClient

    with ServingClient(address, timeout=30) as client:
        [rec] = client.recommend(model, [user], k=k, label="stable")
        status = client.model_status(model)
    return Served(model, rec.model_version, [(s.version, s.state) for s in status], user, rec.items)


def format_served(served: Served) -> str:
    lines = [
        f"TF Serving model {served.model!r}: label stable -> version {served.stable_version}; "
        f"versions: " + ", ".join(f"v{v} {s}" for v, s in served.versions),
        f"top-{len(served.items)} for user {served.user!r}:",
    ]
    for rank, (item, title, score) in enumerate(served.items, 1):
        lines.append(f"  {rank:2d}. {item:<12} {score:9.4f}  {title}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The engine and the stack


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip("'\"")
    return out


Runner = Callable[..., subprocess.CompletedProcess]


def compose_command(run: Runner = subprocess.run) -> list[str]:
    """``docker compose`` (v2) when the plugin answers, else ``docker-compose``."""
    if shutil.which("docker"):
        probe = run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SmokeFailed("no compose command: install Docker Compose v2 (`docker compose`)")


def check_engine(run: Runner = subprocess.run) -> None:
    """Fail at once, and say why, where no Docker engine answers."""
    if not shutil.which("docker"):
        raise SmokeFailed(
            "compose-smoke needs a Docker host: the `docker` CLI is not installed here. Run it "
            "on a machine with Docker Engine (and the NVIDIA Container Toolkit for the GPU "
            "variant, or CPU=1)"
        )
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
               text=True, timeout=60)  # fmt: skip
    if info.returncode != 0 or not info.stdout.strip():
        reason = (info.stderr or info.stdout).strip().splitlines()[-1:] or ["no answer"]
        raise SmokeFailed(
            f"compose-smoke needs a running Docker engine; `docker info` failed ({reason[0]}). "
            "Start the Docker daemon (or run this on a Docker host)"
        )


@dataclass
class Stack:
    files: list[Path]
    env_file: Path
    project: str = PROJECT
    run: Runner = subprocess.run
    compose: list[str] = field(default_factory=list)

    def _cmd(self, *args: str) -> list[str]:
        cmd = [*self.compose, "--project-name", self.project, "--env-file", str(self.env_file)]
        for f in self.files:
            cmd += ["-f", str(f)]
        return [*cmd, *args]

    def up(self) -> None:
        proc = self.run(self._cmd("up", "-d", "--build"), cwd=ROOT)
        if proc.returncode != 0:
            raise SmokeFailed(f"`{' '.join(self._cmd('up', '-d', '--build'))}` failed")

    def down(self) -> None:
        self.run(self._cmd("down", "-v", "--remove-orphans"), cwd=ROOT)


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SmokeFailed(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(poll)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _parsed(api: AirflowApi, dag_id: str) -> bool:
    try:
        return bool(api.dag(dag_id))
    except SmokeFailed:  # 404 until the DAG processor has parsed it
        return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compose-smoke", description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="add docker-compose.cpu.yml (no GPU)")
    p.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    p.add_argument("--env-file", type=Path, default=ROOT / ".env")
    p.add_argument("--user", default="1", help="user id to ask TF Serving for")
    p.add_argument("--start-timeout", type=float, default=900.0)
    p.add_argument("--run-timeout", type=float, default=3600.0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_engine()
        if not args.env_file.is_file():
            raise SmokeFailed(
                f"expected {args.env_file}: `cp .env.example .env` and fill in every secret"
            )
        env = read_env_file(args.env_file)
        stack = Stack(
            [ROOT / "docker-compose.yml", *([ROOT / "docker-compose.cpu.yml"] * args.cpu)],
            args.env_file,
            compose=compose_command(),
        )
        return _smoke(stack, env, args)
    except SmokeFailed as error:
        print(f"compose-smoke: FAILED: {error}", file=sys.stderr)
        return 1


def _smoke(stack: Stack, env: dict[str, str], args: argparse.Namespace) -> int:
    from recflow.net import port_open
    from recflow.pipeline.pools import SERVING_POOL

    host = "127.0.0.1"
    ports = {
        "Airflow API": int(env.get("AIRFLOW_API_PORT", "8080")),
        "MLflow": int(env.get("MLFLOW_PORT", "5000")),
        "TF Serving gRPC": int(env.get("TF_SERVING_GRPC_PORT", "8500")),
    }
    busy = [f"{name} ({port})" for name, port in ports.items() if port_open(host, port)]
    if busy:
        raise SmokeFailed(f"ports already in use: {busy}; stop what holds them or change .env")
    print(f"compose-smoke: building and starting {stack.project} ({len(stack.files)} file(s))")
    stack.up()
    try:
        airflow_url = f"http://{host}:{ports['Airflow API']}"
        wait_until(lambda: _http_ok(f"{airflow_url}/api/v2/version"), args.start_timeout,
                   "the Airflow API server")  # fmt: skip
        wait_until(lambda: _http_ok(f"http://{host}:{ports['MLflow']}/health"), args.start_timeout,
                   "MLflow")  # fmt: skip
        wait_until(lambda: port_open(host, ports["TF Serving gRPC"]), args.start_timeout,
                   "TF Serving")  # fmt: skip
        api = AirflowApi(airflow_url, env.get("AIRFLOW_ADMIN_USER", "admin"),
                         env["AIRFLOW_ADMIN_PASSWORD"])  # fmt: skip
        print(f"compose-smoke: Airflow {api.version()} up; pool {api.pool(SERVING_POOL)['name']}")
        wait_until(lambda: _parsed(api, DAG_ID), args.start_timeout, f"DAG {DAG_ID} parsed")
        api.unpause(DAG_ID)
        run_id = api.trigger(DAG_ID, SMOKE_CONF)
        states = api.wait_for_run(DAG_ID, run_id, args.run_timeout)
        print(f"compose-smoke: run {run_id} succeeded: {states}")
        from recflow.config import ServingConfig

        served = stable_top_k(f"{host}:{ports['TF Serving gRPC']}", ServingConfig().model_name,
                              args.user)  # fmt: skip
        print(format_served(served))
        return 0
    finally:
        if args.keep:
            print(f"compose-smoke: --keep: the stack {stack.project} keeps running")
        else:
            print(f"compose-smoke: tearing down {stack.project} (with its volumes)")
            stack.down()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
