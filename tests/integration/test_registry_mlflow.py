"""MlflowRegistry against real MLflow 3 stores.

The ``test_contract_*`` functions of tests/unit/test_registry_memory.py run here again with the
``registry`` fixture overridden to an MlflowRegistry on a sqlite store, so the in-memory
registry and the MLflow one are held to the same behaviour. Further tests read the results back
with MlflowClient directly, and one drives a real ``mlflow server`` subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

from recflow.errors import RegistryError  # noqa: E402
from recflow.registry import TAG_DAG_RUN_ID, MlflowRegistry, Registry  # noqa: E402
from recflow.registry import base as registry_base  # noqa: E402


def _load_contract() -> Any:
    path = Path(__file__).resolve().parents[1] / "unit" / "test_registry_memory.py"
    spec = importlib.util.spec_from_file_location("registry_contract", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_contract = _load_contract()
globals().update({k: v for k, v in vars(_contract).items() if k.startswith("test_contract_")})
make_model_dir = _contract.make_model_dir
files_of = _contract.files_of


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return MlflowRegistry(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", tmp_path / "artifacts")


def _client(registry: MlflowRegistry) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)


def test_limits_match_installed_mlflow() -> None:
    from mlflow.utils import validation

    assert registry_base.MAX_PARAM_VALUE_LENGTH == validation.MAX_PARAM_VAL_LENGTH
    assert registry_base.MAX_TAG_VALUE_LENGTH == validation.MAX_TAG_VAL_LENGTH
    assert registry_base.MAX_KEY_LENGTH == validation.MAX_ENTITY_KEY_LENGTH


def test_sqlite_store_as_seen_by_mlflow(registry: MlflowRegistry, tmp_path: Path) -> None:
    run_id = registry.start_run("exp/with space", "train", {TAG_DAG_RUN_ID: "manual__1"})
    registry.log_metrics(run_id, {"ndcg@10": 0.3})
    df = pd.DataFrame({"user_id": ["u1", "u2"], "rating": [1.0, 2.0]})
    registry.log_dataset(
        run_id, df, name="interactions", digest="d1", source="/data/i.parquet", context="training"
    )
    registry.log_artifacts(run_id, make_model_dir(tmp_path / "export", "a"), "model")
    version = registry.register_version("m", run_id, "model", tags={"gate.passed": "true"})
    registry.set_alias("m", "champion", version)
    registry.end_run(run_id)

    client = _client(registry)
    run = client.get_run(run_id)
    # Artifacts live under the configured root, one folder per experiment (file-system safe).
    expected_root = (tmp_path / "artifacts" / "exp_with_space").as_uri()
    assert run.info.artifact_uri.startswith(expected_root + "/")
    assert (tmp_path / "artifacts" / "exp_with_space" / run_id / "artifacts" / "model").is_dir()
    assert run.data.metrics == {"ndcg_at_10": 0.3}
    assert (
        run.data.tags[registry_base.TAG_GIT_COMMIT]
        == registry_base.code_version()[registry_base.TAG_GIT_COMMIT]
    )
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "interactions"
    assert dataset_input.dataset.digest == "d1"
    assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "training"}
    assert "user_id" in dataset_input.dataset.schema

    mv = client.get_model_version_by_alias("m", "champion")
    assert int(mv.version) == version
    assert mv.run_id == run_id
    assert mv.tags == {"gate.passed": "true"}
    assert mv.source == f"{run.info.artifact_uri}/model"


def test_aliases_move_as_seen_by_mlflow(registry: MlflowRegistry, tmp_path: Path) -> None:
    runs = []
    for marker in ("one", "two", "three"):
        run_id = registry.start_run("exp", marker, {TAG_DAG_RUN_ID: marker})
        registry.log_artifacts(run_id, make_model_dir(tmp_path / marker, marker), "model")
        runs.append(run_id)
    v1, v2, v3 = (registry.register_version("m", r, "model") for r in runs)
    # The promotion step's moves: champion -> new, previous -> old champion.
    registry.set_alias("m", "champion", v1)
    for new in (v2, v3):
        old = registry.get_version_by_alias("m", "champion")
        assert old is not None
        registry.set_alias("m", "challenger", new)
        registry.set_alias("m", "previous", old.version)
        registry.set_alias("m", "champion", new)
        registry.delete_alias("m", "challenger")

    client = _client(registry)
    assert int(client.get_model_version_by_alias("m", "champion").version) == v3
    assert int(client.get_model_version_by_alias("m", "previous").version) == v2
    assert client.get_registered_model("m").aliases == {"champion": v3, "previous": v2}
    assert registry.get_version("m", v1).aliases == ()


def test_unreachable_server_raises_registry_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from urllib3.util import connection

    # Fails fast = no retry storm: count the connection attempts (urllib3 opens each one
    # through this function) instead of timing the call.
    attempts: list[tuple[str, int]] = []
    connect = connection.create_connection

    def counted(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(connection, "create_connection", counted)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    registry = MlflowRegistry(uri, Path("/nonexistent/ignored-for-http"))
    with pytest.raises(RegistryError, match=r"tracking server is running.*/health") as info:
        registry.start_run("exp", "train", {TAG_DAG_RUN_ID: "x"})
    assert uri in str(info.value)
    assert attempts == [("127.0.0.1", port)]  # one request, not retried


# ------------------------------------------------------------------------------ real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real tracking server with proxied artifacts; yields (uri, artifacts folder)."""
    port = _free_port()
    artifacts = tmp_path / "server-artifacts"
    log = tmp_path / "server.log"
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() - started > 120:  # a bound on waiting, not a timing check
                pytest.fail(f"mlflow server not healthy after 120 s:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        print(f"mlflow server healthy after {time.monotonic() - started:.1f} s")
        yield uri, artifacts
    finally:
        # The server forks workers: end its whole process group (ours, started above).
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_tracking_server_with_proxied_artifacts(
    mlflow_server: tuple[str, Path], tmp_path: Path
) -> None:
    uri, server_artifacts = mlflow_server
    registry = MlflowRegistry(uri, tmp_path / "ignored")
    run_id = registry.start_run("exp", "train", {TAG_DAG_RUN_ID: "scheduled__1"})
    assert registry.find_run("exp", {TAG_DAG_RUN_ID: "scheduled__1"}) == run_id
    registry.log_params(run_id, {"train": {"epochs": 3}})
    registry.log_params(run_id, {"train": {"epochs": 3}})
    registry.log_metrics(run_id, {"hr@10": 0.4})
    model = make_model_dir(tmp_path / "export", "served")
    registry.log_artifacts(run_id, model, "model")
    version = registry.register_version("m", run_id, "model", description="via server")
    registry.set_alias("m", "champion", version)
    registry.end_run(run_id)

    info = registry.get_run(run_id)
    assert info.artifact_uri.startswith("mlflow-artifacts:/")
    assert info.params == {"train.epochs": "3"}
    assert info.metrics == {"hr_at_10": pytest.approx(0.4)}
    champ = registry.get_version_by_alias("m", "champion")
    assert champ is not None and champ.version == version == 1
    assert champ.source.startswith("mlflow-artifacts:/")
    assert champ.description == "via server"
    # Files went through the server into its --artifacts-destination, not to a local path.
    assert any(server_artifacts.rglob("saved_model.pb"))
    assert not (tmp_path / "ignored").exists()

    got = registry.download_version("m", version, tmp_path / "download")
    assert files_of(got) == files_of(model)
