"""Retries of transient faults: a deploy that met a stopped server succeeds when retried and
ends exactly where a clean run ends; finished deploy/promote tasks re-run without changes.

The server's downtime is ordered by events (it starts once the first attempt has failed),
never by a sleep.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from _savedmodel_fixture import publish_version

from recflow.config import PipelineConfig, RegistryConfig, ServingConfig
from recflow.errors import PromotionError, ServingError, is_transient
from recflow.net import free_port
from recflow.pipeline import deploy
from recflow.pipeline.context import DAG_ID_TAG, DAG_RUN_TAG, RunContext
from recflow.pipeline.retries import final_error
from recflow.registry.memory import InMemoryRegistry
from recflow.serving.client import ServingClient
from recflow.serving.model_config import ModelEntry, read_entries, write_entries
from recflow.serving.server_process import ModelServerProcess

MODEL = "recommender"
REGISTERED = "rec"
DAG, RUN = "recsys_training", "manual__1"


def _setup(
    root: Path, sources: dict[str, Path], port: int
) -> tuple[PipelineConfig, RunContext, Any]:
    base = root / "models"
    publish_version(sources["A"], base / MODEL, 1)
    config = root / "models.config"
    write_entries(config, [ModelEntry(MODEL, str(base / MODEL), (1,), {"stable": 1})])
    cfg = PipelineConfig(
        work_dir=root,
        registry=RegistryConfig(model_name=REGISTERED),
        serving=ServingConfig(
            model_name=MODEL,
            model_base_path=str(base),
            model_config_file=str(config),
            grpc_port=port,
            rpc_attempts=1,  # the first attempt meets the stopped server and fails
        ),
    )
    ctx = RunContext(DAG, RUN, root / "runs" / "run")
    shutil.copytree(sources["B"], ctx.saved_model_dir)
    ctx.write_json("register.json", {"version": 2})
    registry = InMemoryRegistry(root / "registry")
    for source in (sources["A"], sources["B"]):
        run = registry.start_run(cfg.registry.experiment, "train", {})
        registry.log_artifacts(run, source, "model")
        registry.register_version(REGISTERED, run, "model", description="trained.")
    registry.set_alias(REGISTERED, "champion", 1)
    registry.set_alias(REGISTERED, "challenger", 2)
    return cfg, ctx, registry


def _state(cfg: PipelineConfig, registry: Any) -> dict[str, Any]:
    """What a run leaves behind: config, what the server serves, registry versions, run tags."""
    entry = read_entries(cfg.model_config_file)[MODEL]
    with ServingClient(cfg.server_address, timeout=30) as client:
        served = {s.version: s.state for s in client.model_status(MODEL)}
        answering = {
            label: client.predict_with_version(MODEL, {"user_id": ["u1"]}, label=label)[1]
            for label in entry.labels
        }
    versions = {
        v: (dict(info.tags), info.aliases, info.description)
        for v in (1, 2)
        for info in [registry.get_version(REGISTERED, v)]
    }
    run = registry.find_run(cfg.registry.experiment, {DAG_RUN_TAG: RUN, DAG_ID_TAG: DAG})
    tags = registry.get_run(run).tags if run else {}
    return {
        "versions": entry.versions,
        "labels": dict(entry.labels),
        "served": served,
        "answering": answering,
        "registry": versions,
        "run": {k: tags.get(k) for k in ("decision", "serving.error")},
    }


def _server(cfg: PipelineConfig, root: Path) -> ModelServerProcess:
    return ModelServerProcess(
        cfg.model_config_file, port=cfg.serving.grpc_port, log_file=root / "server.log"
    )


def _deploy_and_promote(cfg: PipelineConfig, ctx: RunContext, registry: Any) -> None:
    deploy.deploy_canary(cfg, ctx, registry)
    deploy.promote(cfg, ctx, registry)


def test_deploy_that_fails_once_succeeds_on_retry(model_sources, tmp_path: Path) -> None:
    clean_root, retry_root = tmp_path / "clean", tmp_path / "retry"
    cfg, ctx, registry = _setup(clean_root, model_sources, free_port())
    with _server(cfg, clean_root):
        _deploy_and_promote(cfg, ctx, registry)
        clean = _state(cfg, registry)

    cfg, ctx, registry = _setup(retry_root, model_sources, free_port())
    config_before = cfg.model_config_file.read_text()
    server = _server(cfg, retry_root)
    first_failed, server_up = threading.Event(), threading.Event()

    def start_when_told() -> None:
        if first_failed.wait(timeout=300):
            server.start()
            server_up.set()

    starter = threading.Thread(target=start_when_told, daemon=True)
    starter.start()
    try:
        with pytest.raises(PromotionError) as failure:
            deploy.deploy_canary(cfg, ctx, registry)  # attempt 1: nobody listens
        first_failed.set()
        assert is_transient(failure.value)  # Airflow retries it ...
        assert final_error(failure.value) is failure.value  # ... as it is, not as a verdict
        assert cfg.model_config_file.read_text() == config_before  # nothing half-done
        assert registry.get_version(REGISTERED, 2).aliases == ("challenger",)
        assert server_up.wait(timeout=300)
        _deploy_and_promote(cfg, ctx, registry)  # the retry, then the rest of the run
        retried = _state(cfg, registry)
        assert retried == clean

        # Re-running finished tasks changes nothing.
        config_text = cfg.model_config_file.read_text()
        deploy.deploy_canary(cfg, ctx, registry)
        deploy.promote(cfg, ctx, registry)
        assert cfg.model_config_file.read_text() == config_text
        assert _state(cfg, registry) == clean
    finally:
        first_failed.set()
        starter.join(timeout=300)
        server.stop()
    assert clean["labels"] == {"stable": 2} and clean["answering"] == {"stable": 2}
    assert clean["versions"] == (1, 2) and clean["run"]["decision"] == "promoted"


def test_client_retries_unavailable_within_its_deadline(model_sources, tmp_path: Path) -> None:
    cfg, _, _ = _setup(tmp_path, model_sources, free_port())
    server = _server(cfg, tmp_path)
    first_refusal = threading.Event()
    retries: list[int] = []

    def on_retry(attempt: int, error: ServingError) -> None:
        retries.append(attempt)
        first_refusal.set()

    starter = threading.Thread(
        target=lambda: first_refusal.wait(timeout=300) and server.start(), daemon=True
    )
    starter.start()
    try:
        with ServingClient(
            cfg.server_address, timeout=300, attempts=1000, on_retry=on_retry
        ) as client:
            # One call: refused while the server is down, answered once it is up.
            statuses = client.model_status(MODEL, 1)
    finally:
        first_refusal.set()
        starter.join(timeout=300)
        server.stop()
    assert retries and retries[0] == 1
    assert [s.state for s in statuses] == ["AVAILABLE"]
