"""The training DAG with Airflow's metadata DB and MLflow's backend on a real PostgreSQL 15.

The production compose file puts both on Postgres (two databases of one server); here a
throwaway cluster (tests/integration/pg.py) stands in for that service, and the run must leave
its state there and nowhere else: no SQLite file may appear under the work folder.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pg  # tests/integration/pg.py (this folder is on sys.path, see conftest.py)
import pytest

from recflow.dev.airflow_env import airflow_env
from recflow.net import free_port
from recflow.serving.server_process import ModelServerProcess

pytestmark = pytest.mark.slow

REGISTERED = "pg-recommender"
SERVED = "pg"
DAG_ID = "recsys_training"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    reason = pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        pytest.skip(
            "asyncpg is not installed: Airflow 3 opens an async engine on its metadata DB "
            "(postgresql+asyncpg) next to psycopg2; add asyncpg to requirements/base.in"
        )
    with pg.postgres_cluster(databases=("airflow", "mlflow")) as running:
        yield running


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory) -> dict[str, Any]:
    """One DAG run against Postgres; the tests below inspect what it left behind."""
    work = tmp_path_factory.mktemp("pgwork")
    port = free_port()
    env = airflow_env(work, database_url=cluster.url("airflow", driver="postgresql+psycopg2"))
    # The driver is explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg (3), which
    # is not installed; psycopg2 is (requirements, and both Docker images).
    tracking_uri = cluster.url("mlflow", driver="postgresql+psycopg2")
    conf = {
        "work_dir": str(work),
        "synthetic_users": 300,
        "synthetic_items": 200,
        "min_users": 20,
        "min_items": 20,
        "min_interactions": 300,
        "epochs": 2,
        "serving_port": port,
        "serving_host": "127.0.0.1",
        "tracking_uri": tracking_uri,
        "registered_model_name": REGISTERED,
        "serving_model_name": SERVED,
    }
    (work / "logs").mkdir(parents=True, exist_ok=True)
    with ModelServerProcess(
        work / "serving" / "models.config",
        port=port,
        log_file=work / "logs" / "server.log",
        poll_seconds=0.5,
    ):
        migrate = subprocess.run(
            ["airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
        )
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        proc = subprocess.run(
            ["airflow", "dags", "test", DAG_ID, "-c", json.dumps(conf)],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    (work / "logs" / "dag.log").write_text(proc.stdout + proc.stderr)
    return {"work": work, "proc": proc, "tracking_uri": tracking_uri, "cluster": cluster}


def _tail(run: dict[str, Any]) -> str:
    proc = run["proc"]
    return f"see {run['work'] / 'logs' / 'dag.log'}\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"


def test_dag_succeeds_and_promotes_on_postgres(run):
    assert run["proc"].returncode == 0, _tail(run)
    out = run["proc"].stdout + run["proc"].stderr
    assert "gate: PASSED" in out, _tail(run)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=run["tracking_uri"])
    champion = client.get_model_version_by_alias(REGISTERED, "champion")
    assert int(champion.version) == 1
    assert champion.tags.get("serving") == "stable"
    assert client.get_run(champion.run_id).data.tags["decision"] == "promoted"


def test_airflow_state_lives_in_the_airflow_database(run):
    cluster = run["cluster"]
    tables = {
        row[0]
        for row in cluster.query(
            "airflow", "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    }
    assert {"dag", "dag_run", "task_instance", "xcom", "alembic_version"} <= tables, tables
    runs = cluster.query("airflow", "SELECT state FROM dag_run WHERE dag_id = %s", [DAG_ID])
    assert [r[0] for r in runs] == ["success"], runs
    states = dict(
        cluster.query(
            "airflow", "SELECT task_id, state FROM task_instance WHERE dag_id = %s", [DAG_ID]
        )
    )
    assert states.get("promote_stable") == "success", states
    assert states.get("validate") == "success", states


def test_mlflow_state_lives_in_the_mlflow_database_and_nothing_in_sqlite(run):
    cluster = run["cluster"]
    aliases = cluster.query(
        "mlflow",
        "SELECT alias, version FROM registered_model_aliases WHERE name = %s",
        [REGISTERED],
    )
    assert ("champion", 1) in aliases, aliases
    # Airflow's and MLflow's schemas stay apart: one database each, as in docker-compose.yml.
    airflow_tables = {r[0] for r in cluster.query("airflow", "SELECT tablename FROM pg_tables")}
    assert "registered_models" not in airflow_tables
    sqlite_files = sorted(str(p) for p in run["work"].rglob("*.db"))
    assert sqlite_files == [], f"expected no SQLite databases, found {sqlite_files}"


def test_compose_init_script_creates_both_databases_and_roles():
    """docker/postgres/init-databases.sh, as the postgres image runs it on an empty volume."""
    import os

    reason = pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    script = pg.REPO_ROOT / "docker" / "postgres" / "init-databases.sh"
    with pg.postgres_cluster() as fresh:  # its own cluster: the image starts from an empty one
        env = {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(fresh.port),
            "POSTGRES_USER": "postgres",
            "AIRFLOW_DB_PASSWORD": "pw-a'quote",  # psql variables must quote it
            "MLFLOW_DB_PASSWORD": "pw-m",
        }
        missing = subprocess.run(
            ["bash", str(script)],
            env={**env, "MLFLOW_DB_PASSWORD": ""},
            capture_output=True,
            text=True,
        )
        assert missing.returncode != 0 and "MLFLOW_DB_PASSWORD" in missing.stderr
        proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        owners = dict(
            fresh.query(
                "postgres",
                "SELECT d.datname, r.rolname FROM pg_database d "
                "JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname IN ('airflow', 'mlflow')",
            )
        )
        assert owners == {"airflow": "airflow", "mlflow": "mlflow"}
        roles = dict(
            fresh.query(
                "postgres",
                "SELECT rolname, rolpassword IS NOT NULL AND rolcanlogin FROM pg_authid "
                "WHERE rolname IN ('airflow', 'mlflow')",
            )
        )
        assert roles == {"airflow": True, "mlflow": True}


def _compose_healthcheck() -> str:
    """The postgres service's healthcheck command, as its shell runs it (``$$`` -> ``$``)."""
    import yaml

    compose = yaml.safe_load((pg.REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    test = compose["services"]["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", test
    return str(test[1]).replace("$$", "$")


def test_compose_healthcheck_passes_only_when_both_databases_answer_their_roles():
    """The compose healthcheck, run by a shell against a real server, before and after init."""
    import os

    reason = pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    command = _compose_healthcheck()
    script = pg.REPO_ROOT / "docker" / "postgres" / "init-databases.sh"
    with pg.postgres_cluster() as fresh:
        # What the container's environment holds (the compose file passes both passwords).
        env = {
            **os.environ,
            "PGPORT": str(fresh.port),
            "POSTGRES_USER": "postgres",
            "PGHOST": "127.0.0.1",
            "AIRFLOW_DB_PASSWORD": "pw-airflow",
            "MLFLOW_DB_PASSWORD": "pw-mlflow",
        }

        def healthy(**overrides: str) -> bool:
            proc = subprocess.run(
                ["sh", "-c", command], env={**env, **overrides}, capture_output=True, timeout=60
            )
            return proc.returncode == 0

        assert not healthy(), "healthy before the databases exist"
        init = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert init.returncode == 0, init.stdout + init.stderr
        # The roles must log in with their passwords over TCP, as the services do.
        hba = fresh.data_dir / "pg_hba.conf"
        rules = "host all airflow,mlflow 127.0.0.1/32 scram-sha-256\n"
        subprocess.run(
            ["sh", "-c", f"printf '%s' '{rules}' | cat - {hba} > {hba}.new && mv {hba}.new {hba}"],
            user=fresh.user, check=True, timeout=30,
        )  # fmt: skip
        fresh.stop()  # a restart, not a reload: the new rules are in force when it returns
        fresh.start()
        assert healthy()
        assert not healthy(MLFLOW_DB_PASSWORD="wrong"), "a wrong mlflow password passed"
        fresh.execute("postgres", "DROP DATABASE mlflow")
        assert not healthy(), "healthy with the mlflow database missing"
