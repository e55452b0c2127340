"""The DAG tests load the DAG folder with Airflow's DagBag in a fresh interpreter (Airflow reads
its configuration at first import) and read back one JSON line the probe script prints."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recflow.dev.airflow_env import DAGS_FOLDER, airflow_env


@pytest.fixture(scope="session")
def run_dag_probe(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """``run_dag_probe(script)``: run ``script`` (given the DAG folder as argv[1]) under its own
    AIRFLOW_HOME and return what it printed after ``RESULT`` as JSON."""

    def run(script: str) -> Any:
        home: Path = tmp_path_factory.mktemp("recflow")
        proc = subprocess.run(
            [sys.executable, "-c", script, str(DAGS_FOLDER)],
            env=airflow_env(home),
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
        assert line, f"DAG probe failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return json.loads(line[0][len("RESULT") :])

    return run
