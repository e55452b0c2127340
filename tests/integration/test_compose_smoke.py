"""The pieces of `make compose-smoke`, against real servers (there is no Docker engine here).

- REST: a local Airflow 3.3.2 (api-server, scheduler, dag-processor; LocalExecutor on SQLite)
  with the FAB auth manager, as docker-compose.yml configures it, the admin user and the
  serving pool created the way airflow-init does. ``AirflowApi`` gets a JWT from /auth/token,
  reads the pool, unpauses and triggers a DAG with a conf, and waits for it: a run that
  succeeds returns its task states, one that fails names the failed task.
- gRPC: ``stable_top_k`` asks the local model server for label ``stable`` of a model the
  pipeline's promotion code deployed.
- The command itself fails at once, with the reason, where no Docker engine answers.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from recflow.dev.airflow_env import airflow_env
from recflow.net import free_port
from recflow.ops import compose_smoke as smoke
from recflow.pipeline.pools import SERVING_POOL
from recflow.serving.server_process import ModelServerProcess

pytestmark = pytest.mark.slow

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
ADMIN, PASSWORD = "admin", "smoke-admin-pw"

DAGS = """
import pendulum
from airflow.sdk import dag, get_current_context, task

POOL = "{pool}"

@dag(dag_id="smoke_ok", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     catchup=False)
def smoke_ok():
    @task(pool=POOL)
    def check_conf() -> int:
        conf = get_current_context()["dag_run"].conf
        assert conf["epochs"] == 2, conf   # the trigger's conf reached the task
        return conf["epochs"]
    check_conf()

@dag(dag_id="smoke_fail", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     catchup=False)
def smoke_fail():
    @task
    def breaks() -> None:
        raise RuntimeError("deliberately broken")
    breaks()

smoke_ok()
smoke_fail()
"""


def _airflow(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"airflow {' '.join(args)}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    )


@pytest.fixture(scope="module")
def airflow_fab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[smoke.AirflowApi]:
    pytest.importorskip("airflow.providers.fab", reason="pip install apache-airflow-providers-fab")
    import ui_helpers as ui

    work = tmp_path_factory.mktemp("smoke")
    dags = work / "dags"
    dags.mkdir()
    (dags / "smoke_dags.py").write_text(textwrap.dedent(DAGS).format(pool=SERVING_POOL))
    port = free_port()
    env = airflow_env(work)
    env.update(
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__AUTH_MANAGER": FAB,
            "AIRFLOW__API_AUTH__JWT_SECRET": "smoke-jwt-secret",
            "AIRFLOW__API__SECRET_KEY": "smoke-api-secret",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # as in docker-compose.yml
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        }
    )
    # What airflow-init does: migrate, create the admin (FAB), create the serving pool.
    _airflow(env, "db", "migrate")
    _airflow(env, "users", "create", "--username", ADMIN, "--password", PASSWORD, "--role",
             "Admin", "--firstname", "Smoke", "--lastname", "Test", "--email", "s@example.com")  # fmt: skip
    _airflow(env, "pools", "set", SERVING_POOL, "1", "recflow serving pool")
    services = []
    try:
        url = f"http://127.0.0.1:{port}"
        services.append(
            ui.start_service(
                "api-server",
                ui.python_module("airflow", "api-server"),
                env,
                url,
                "/api/v2/version",
                work / "logs" / "api.log",
                timeout=240,
            )  # fmt: skip
        )
        for name in ("scheduler", "dag-processor"):
            services.append(
                ui.start_service(
                    name,
                    ui.python_module("airflow", name),
                    env,
                    url,
                    "/api/v2/version",
                    work / "logs" / f"{name}.log",
                    timeout=60,
                )  # fmt: skip
            )
        yield smoke.AirflowApi(url, ADMIN, PASSWORD)
    finally:
        for service in reversed(services):
            service.stop()


def test_rest_client_signs_in_with_the_fab_auth_manager(airflow_fab: smoke.AirflowApi) -> None:
    assert airflow_fab.version() == "3.3.2"
    assert airflow_fab.token().count(".") == 2  # a JWT
    assert airflow_fab.pool(SERVING_POOL)["slots"] == 1
    wrong = smoke.AirflowApi(airflow_fab.base_url, ADMIN, "not-the-password")
    with pytest.raises(smoke.SmokeFailed, match="HTTP 401"):
        wrong.token()


def test_rest_client_triggers_and_waits_for_success(airflow_fab: smoke.AirflowApi) -> None:
    import ui_helpers as ui

    ui.wait_for(lambda: smoke._parsed(airflow_fab, "smoke_ok"), 180, "smoke_ok to be parsed")
    assert airflow_fab.dag("smoke_ok")["is_paused"] is True
    airflow_fab.unpause("smoke_ok")
    run_id = airflow_fab.trigger("smoke_ok", smoke.SMOKE_CONF)
    states = airflow_fab.wait_for_run("smoke_ok", run_id, timeout=300, poll=2)
    assert states == {"check_conf": "success"}


def test_rest_client_names_the_failed_task(airflow_fab: smoke.AirflowApi) -> None:
    import ui_helpers as ui

    ui.wait_for(lambda: smoke._parsed(airflow_fab, "smoke_fail"), 180, "smoke_fail parsed")
    airflow_fab.unpause("smoke_fail")
    run_id = airflow_fab.trigger("smoke_fail", {})
    with pytest.raises(smoke.SmokeFailed, match=r"failed tasks: \['breaks'\]"):
        airflow_fab.wait_for_run("smoke_fail", run_id, timeout=300, poll=2)


def test_grpc_part_reads_label_stable_from_the_model_server(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _exported_models import small_features

    from recflow.models import export_model
    from recflow.promotion import Promoter
    from recflow.serving.client import ServingClient

    features = small_features()
    saved = export_model(None, features, tmp_path / "export", top_k=10,
                         warmup_user_ids=["user-0"], model_kind="popularity")  # fmt: skip
    config = tmp_path / "serving" / "models.config"
    with ModelServerProcess(config, port=free_port(), log_file=tmp_path / "server.log",
                            poll_seconds=0.5) as server:  # fmt: skip
        with ServingClient(server.address, timeout=30) as client:
            promoter = Promoter(client, config, "recommender", tmp_path / "models",
                                load_timeout=60)  # fmt: skip
            promoter.deploy_canary(saved, 3)
            promoter.promote_stable(3)
        served = smoke.stable_top_k(server.address, "recommender", "user-0", k=10)
    assert served.stable_version == 3 and served.versions == [(3, "AVAILABLE")]
    assert len(served.items) == 10
    assert {item for item, _, _ in served.items} <= {str(i) for i in features.item_ids}
    scores = [score for _, _, score in served.items]
    assert scores == sorted(scores, reverse=True)
    text = smoke.format_served(served)
    assert "label stable -> version 3" in text and " 1. " in text and "10. " in text


def test_smoke_fails_fast_without_an_engine(capsys: pytest.CaptureFixture[str]) -> None:
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=60) if (
        smoke.shutil.which("docker")
    ) else None  # fmt: skip
    if probe is not None and probe.returncode == 0:
        pytest.skip("a Docker engine answers here: the smoke run would really start the stack")
    assert smoke.main(["--cpu"]) == 1
    err = capsys.readouterr().err
    assert "compose-smoke: FAILED: compose-smoke needs" in err
    assert "Docker" in err


def test_engine_check_reports_what_docker_info_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke.shutil, "which", lambda name: f"/usr/bin/{name}")

    def no_daemon(cmd: list[str], **_: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 1, "", "Cannot connect to the Docker daemon\n")

    with pytest.raises(smoke.SmokeFailed, match=r"`docker info` failed \(Cannot connect"):
        smoke.check_engine(run=no_daemon)
    monkeypatch.setattr(smoke.shutil, "which", lambda name: None)
    with pytest.raises(smoke.SmokeFailed, match="`docker` CLI is not installed"):
        smoke.check_engine()


def test_stack_commands_use_their_own_project(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def record(cmd: list[str], **_: object) -> subprocess.CompletedProcess:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    files = [smoke.ROOT / "docker-compose.yml", smoke.ROOT / "docker-compose.cpu.yml"]
    stack = smoke.Stack(files, tmp_path / ".env", run=record, compose=["docker", "compose"])
    stack.up()
    stack.down()
    up, down = calls
    assert up[:6] == ["docker", "compose", "--project-name", smoke.PROJECT, "--env-file",
                      str(tmp_path / ".env")]  # fmt: skip
    assert up[-3:] == ["up", "-d", "--build"] and up.count("-f") == 2
    # Volumes are removed only for the smoke project, never the operator's default one.
    assert down[-3:] == ["down", "-v", "--remove-orphans"] and smoke.PROJECT in down
