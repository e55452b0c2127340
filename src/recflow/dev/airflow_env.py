"""Environment for running Airflow locally against the project's DAGs (demo, tests, `make airflow`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DAGS_FOLDER = REPO_ROOT / "dags"

TELEMETRY_OFF = {
    "GX_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    "SCARF_ANALYTICS": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def airflow_env(work_dir: Path, *, database_url: str | None = None) -> dict[str, str]:
    """A copy of os.environ set up for a local Airflow whose home is ``work_dir/airflow``."""
    home = work_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(TELEMETRY_OFF)
    env.update(
        {
            "RECFLOW_HOME": str(work_dir),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url
            or f"sqlite:///{home / 'airflow.db'}",
            "PYTHONUNBUFFERED": "1",
            # `airflow` spawns `airflow` subprocesses: the venv's bin must be on PATH.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env
