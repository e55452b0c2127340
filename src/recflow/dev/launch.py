"""Start the platform's local services in the foreground: ``make airflow``, ``make mlflow``,
``make serve``. Each prints where to open it; Ctrl-C stops it.

All three use the same work folder (``$RECFLOW_HOME``, default ``./var``) as ``make demo``, so
the UIs show the runs, models and served versions the demo made.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from recflow.config import PipelineConfig
from recflow.dev.airflow_env import airflow_env
from recflow.errors import ConfigError, ServerUnavailable
from recflow.net import port_open

AIRFLOW_USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
DEFAULT_PORTS = {"airflow": 8080, "mlflow": 5000, "serve": 8500}

COMMANDS = {
    "airflow": "Airflow UI and scheduler (airflow standalone) on the project's DAGs",
    "mlflow": "MLflow UI on the pipeline's tracking store and model registry",
    "serve": "the local model server (TF Serving's gRPC API) on the serving config",
}


# ---------------------------------------------------------------------------------------------
# Airflow


def airflow_login(airflow_home: Path, user: str = AIRFLOW_USER) -> tuple[str, str]:
    """The simple auth manager's login, creating the password file if it does not exist yet.

    Airflow only generates passwords for users missing from this file (and prints them once,
    buried in the start-up output), so writing it ourselves first gives a password we can
    print next to the URL every time.
    """
    path = airflow_home / PASSWORDS_FILE
    passwords: dict[str, str] = {}
    if path.exists():
        try:
            passwords = json.loads(path.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError:
            raise ConfigError(
                f"{path} is not JSON; delete it and start again to get a new password"
            ) from None
    if user not in passwords:
        passwords[user] = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(passwords) + "\n")
    return user, passwords[user]


def airflow_standalone_env(
    work_dir: Path, *, port: int, host: str = "127.0.0.1", user: str = AIRFLOW_USER
) -> dict[str, str]:
    """Environment for ``airflow standalone`` on ``work_dir/airflow`` serving the UI on ``port``."""
    env = airflow_env(work_dir)
    base_url = f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1') else host}:{port}"
    env.update(
        {
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            # Workers reach the API server's execution API at base_url; its default assumes 8080.
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                work_dir / "airflow" / PASSWORDS_FILE
            ),
            # Parse the DAG folder often, so an edited DAG shows up in the UI within seconds.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            # Without this every new DAG starts paused and a triggered run would sit queued.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # One API worker is enough for one person and leaves the CPUs to training.
            "AIRFLOW__API__WORKERS": "1",
        }
    )
    return env


def prepare_airflow_db(env: dict[str, str]) -> None:
    """Migrate the metadata DB and create the serving pool before ``airflow standalone`` starts.

    Every task that changes a model server's config declares ``pool=SERVING_POOL``, and the
    scheduler leaves a task whose pool does not exist unscheduled forever: without this a
    triggered run stops after ``register``. docker-compose.yml's ``airflow-init`` does the same.
    """
    from recflow.pipeline.pools import (
        SERVING_POOL,
        SERVING_POOL_DESCRIPTION,
        SERVING_POOL_SLOTS,
    )

    airflow = [sys.executable, "-m", "airflow"]
    for argv in (
        [*airflow, "db", "migrate"],
        [*airflow, "pools", "set", SERVING_POOL, str(SERVING_POOL_SLOTS), SERVING_POOL_DESCRIPTION],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise ServerUnavailable(
                f"`airflow {' '.join(argv[3:5])}` failed (exit {done.returncode}), so Airflow "
                f"cannot start: {(done.stderr or done.stdout)[-2000:]}"
            )


def airflow_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1') else host}:{port}"


# ---------------------------------------------------------------------------------------------
# MLflow and the model server


def mlflow_command(cfg: PipelineConfig, *, port: int, host: str = "127.0.0.1") -> list[str]:
    """``mlflow server`` on the pipeline's own store, so the UI shows what the DAG recorded.

    The pipeline writes artifacts straight to ``cfg.artifact_root`` (a local folder), so the
    server reads them from there too instead of proxying a separate artifact store.
    """
    if cfg.registry.tracking_uri and not cfg.registry.tracking_uri.startswith(
        ("sqlite:", "postgresql", "mysql")
    ):
        raise ConfigError(
            f"tracking URI {cfg.registry.tracking_uri!r} is already a server: open it in a "
            "browser instead of starting another one"
        )
    cfg.artifact_root.mkdir(parents=True, exist_ok=True)
    (cfg.work_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        cfg.tracking_uri,
        "--default-artifact-root",
        str(cfg.artifact_root),
        "--no-serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def serve_command(cfg: PipelineConfig, *, port: int) -> list[str]:
    from recflow.serving.server_process import model_server_argv

    return model_server_argv(port, cfg.model_config_file)


# ---------------------------------------------------------------------------------------------
# Running in the foreground


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


def _banner(lines: Sequence[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "=" * width, flush=True)
    for line in lines:
        print(f"  {line}", flush=True)
    print("=" * width + "\n", flush=True)


def _announce_when_up(
    process: subprocess.Popen[bytes],
    check: Callable[[], bool],
    lines: Sequence[str],
    timeout: float,
) -> threading.Thread:
    """Print the banner from a thread once ``check`` passes, while the service's own output
    keeps streaming to the terminal."""

    def watch() -> None:
        if wait_until(lambda: check() or process.poll() is not None, timeout):
            if process.poll() is None:
                _banner(lines)
        elif process.poll() is None:
            print(
                f"[recflow] still not answering after {timeout:.0f} s; read the output above "
                "for errors",
                flush=True,
            )

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _foreground(
    argv: list[str],
    env: dict[str, str],
    check: Callable[[], bool],
    lines: Sequence[str],
    timeout: float,
    grace: float = 30.0,
) -> int:
    # Own process group: `airflow standalone` stops its scheduler/API server/triggerer only on
    # SIGINT, so a SIGINT or SIGTERM sent to us alone (by `timeout`, a supervisor, or `kill`)
    # must become a SIGINT to the whole group, else those components outlive us.
    process = subprocess.Popen(argv, env=env, start_new_session=True)
    _announce_when_up(process, check, lines, timeout)
    exited = threading.Event()
    stopping = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        # Only send signals here. Waiting for the child inside a handler contends with the
        # main thread's wait() for its exit status: the launcher then hangs as the parent of
        # a zombie. The main thread's wait() returns once the group has stopped.
        if stopping.is_set():
            return
        stopping.set()
        _signal_group(process.pid, signal.SIGINT)
        threading.Thread(
            target=_kill_if_still_running, args=(process.pid, exited, grace), daemon=True
        ).start()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        exited.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # Children may linger after the leader exits (their group id stays the same).
        _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_if_still_running(pgid: int, exited: threading.Event, grace: float) -> None:
    if not exited.wait(grace):
        _signal_group(pgid, signal.SIGKILL)


def stop_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGINT the process group, then SIGKILL whatever is left after ``grace`` seconds."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    _signal_group(pgid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _check_port_free(port: int, what: str, flag: str) -> None:
    if port_open("127.0.0.1", port):
        raise ServerUnavailable(
            f"port {port} is already in use, so {what} cannot start there; stop whatever "
            f"listens on it, or pick another port with {flag}=<port>"
        )


def run_airflow(cfg: PipelineConfig, port: int, host: str) -> int:
    _check_port_free(port, "Airflow", "AIRFLOW_PORT")
    env = airflow_standalone_env(cfg.work_dir, port=port, host=host)
    user, password = airflow_login(cfg.work_dir / "airflow")
    url = airflow_url(port, host)
    print(f"[recflow] starting Airflow in {cfg.work_dir / 'airflow'} (takes about a minute)")
    prepare_airflow_db(env)
    return _foreground(
        [sys.executable, "-m", "airflow", "standalone"],
        env,
        lambda: http_ok(f"{url}/api/v2/version"),
        [
            f"Airflow UI: {url}/dags/recsys_training",
            f"login: {user} / {password}",
            "Trigger: the 'Trigger' button opens the form of the run's params.",
            "Ctrl-C stops Airflow.",
        ],
        timeout=300,
    )


def run_mlflow(cfg: PipelineConfig, port: int, host: str) -> int:
    _check_port_free(port, "the MLflow UI", "MLFLOW_PORT")
    url = airflow_url(port, host)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    print(f"[recflow] starting the MLflow UI on {cfg.tracking_uri}")
    return _foreground(
        mlflow_command(cfg, port=port, host=host),
        env,
        lambda: http_ok(f"{url}/health"),
        [
            f"MLflow UI: {url}",
            f"Experiment '{cfg.registry.experiment}': one run per DAG run (plots under Artifacts)",
            f"Models: {url}/#/models/{cfg.registry.model_name} (aliases champion, previous)",
            "Ctrl-C stops it.",
        ],
        timeout=120,
    )


def run_serve(cfg: PipelineConfig, port: int) -> int:
    _check_port_free(port, "the model server", "SERVE_PORT")
    cfg.model_config_file.parent.mkdir(parents=True, exist_ok=True)
    if not cfg.model_config_file.exists():
        from recflow.serving.model_config import EMPTY_MODEL_CONFIG
        from recflow.storage import atomic_write_text

        atomic_write_text(cfg.model_config_file, EMPTY_MODEL_CONFIG)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return _foreground(
        serve_command(cfg, port=port),
        env,
        lambda: port_open("127.0.0.1", port),
        [
            f"model server (gRPC): 127.0.0.1:{port}, config {cfg.model_config_file}",
            f"try: .venv/bin/recommend --server 127.0.0.1:{port} --user 1 -k 5",
            "Ctrl-C stops it.",
        ],
        timeout=120,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recflow.dev.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--port",
            type=int,
            default=DEFAULT_PORTS[name],
            help="port to listen on (default %(default)s)",
        )
        if name != "serve":
            p.add_argument(
                "--host",
                default="127.0.0.1",
                help="interface to bind (default %(default)s: this machine only)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from recflow.errors import RecflowError

    args = build_parser().parse_args(argv)
    cfg = PipelineConfig()
    try:
        if args.command == "airflow":
            return run_airflow(cfg, args.port, args.host)
        if args.command == "mlflow":
            return run_mlflow(cfg, args.port, args.host)
        return run_serve(cfg, args.port)
    except RecflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
