"""Launchers behind `make airflow`, `make mlflow`, `make serve`: commands, env, login."""

from __future__ import annotations

import json
import stat

import pytest

from recflow.config import PipelineConfig, RegistryConfig
from recflow.dev import launch
from recflow.errors import ConfigError


def test_airflow_login_creates_then_reuses_the_password(tmp_path):
    user, password = launch.airflow_login(tmp_path)
    path = tmp_path / launch.PASSWORDS_FILE
    assert user == "admin" and len(password) >= 12
    assert json.loads(path.read_text()) == {"admin": password}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a password: owner only
    assert launch.airflow_login(tmp_path) == (user, password)


def test_airflow_login_keeps_a_password_airflow_generated(tmp_path):
    (tmp_path / launch.PASSWORDS_FILE).write_text('{"admin": "from-airflow"}\n')
    assert launch.airflow_login(tmp_path) == ("admin", "from-airflow")


def test_airflow_login_refuses_a_broken_file_and_says_what_to_do(tmp_path):
    (tmp_path / launch.PASSWORDS_FILE).write_text("not json")
    with pytest.raises(ConfigError, match="delete it"):
        launch.airflow_login(tmp_path)


def test_airflow_env_points_everything_at_the_chosen_port(tmp_path):
    env = launch.airflow_standalone_env(tmp_path, port=18123)
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__API__PORT"] == "18123"
    # workers must reach the execution API on the same non-default port
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("dags")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(
        tmp_path / "airflow" / launch.PASSWORDS_FILE
    )
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"


def test_mlflow_command_uses_the_pipelines_store(tmp_path):
    cfg = PipelineConfig(work_dir=tmp_path)
    argv = launch.mlflow_command(cfg, port=5123)
    assert argv[argv.index("--backend-store-uri") + 1] == cfg.tracking_uri
    assert argv[argv.index("--default-artifact-root") + 1] == str(cfg.artifact_root)
    assert argv[argv.index("--port") + 1] == "5123"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert cfg.artifact_root.is_dir()


def test_mlflow_command_refuses_a_remote_tracking_server(tmp_path):
    cfg = PipelineConfig(
        work_dir=tmp_path, registry=RegistryConfig(tracking_uri="http://mlflow:5000")
    )
    with pytest.raises(ConfigError, match="open it in a browser"):
        launch.mlflow_command(cfg, port=5000)


def test_serve_command_has_tf_servings_flags(tmp_path):
    cfg = PipelineConfig(work_dir=tmp_path)
    argv = launch.serve_command(cfg, port=8600)
    assert "--port=8600" in argv
    assert f"--model_config_file={cfg.model_config_file}" in argv
    assert "--allow_version_labels_for_unavailable_models=true" in argv


def test_busy_port_is_an_error_naming_the_fix(tmp_path, monkeypatch, capsys):
    import socket

    monkeypatch.setenv("RECFLOW_HOME", str(tmp_path))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert launch.main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} is already in use" in err and "SERVE_PORT" in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        launch.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    for name, text in launch.COMMANDS.items():
        assert name in out and text in out


def test_demo_prints_a_heartbeat_when_a_step_is_quiet(capsys, monkeypatch):
    """`make demo` must not look hung while a long task prints nothing.

    The heartbeat loop runs here in this thread on a fake clock: each wait of its stop event
    is one tick that advances the clock by the wait's timeout, so the count of heartbeats
    follows from the ticks, not from how fast a thread is scheduled.
    """
    import sys
    from types import SimpleNamespace

    from recflow.dev.demo import _Progress

    now = [1000.0]
    monkeypatch.setattr(
        sys.modules[_Progress.__module__], "time", SimpleNamespace(monotonic=lambda: now[0])
    )

    class Ticks:
        """Stands in for the stop event: ``n`` waits time out, then it is set."""

        def __init__(self, n: int) -> None:
            self.left = n

        def wait(self, timeout: float) -> bool:
            if self.left == 0:
                return True
            self.left -= 1
            now[0] += timeout
            return False

    progress = _Progress(heartbeat=2.5)  # the loop ticks every second
    progress._done = Ticks(6)  # type: ignore[assignment]
    progress._beat()  # quiet from the start: beats after 3 and 6 seconds
    progress.task = "train"
    progress._done = Ticks(2)  # type: ignore[assignment]
    progress._beat()  # 2 quiet seconds since the last beat: silent
    progress._done = Ticks(1)  # type: ignore[assignment]
    progress._beat()  # 3 quiet seconds: one beat, in the task
    lines = [line for line in capsys.readouterr().out.splitlines() if "still running" in line]
    assert [line.split()[0] for line in lines] == ["3.0s", "6.0s", "9.0s"]  # elapsed first
    assert ["starting Airflow" in line for line in lines] == [True, True, False]
    assert "in task train" in lines[2]
