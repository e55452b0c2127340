"""Crash safety (issue 13): SIGKILL the export, register and deploy tasks at chosen points.

Each stage function runs in its own process, as an Airflow task does, against a real MLflow
store (SQLite) and the real model server (gRPC). A fault-injection point (recflow.faults)
makes the process announce that it reached the chosen moment and block there; the test then
kills it with SIGKILL, checks what is visible, re-runs the stage and checks the end state is
the one a clean run leaves. Nothing is decided by sleeping: the kill lands at the point.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recflow.config import PipelineConfig, from_params
from recflow.errors import RegistryError
from recflow.net import free_port
from recflow.pipeline.context import RunContext
from recflow.serving.server_process import ModelServerProcess

pytestmark = pytest.mark.slow

REGISTERED = "crash-recommender"
SERVED = "crash"
RUN_ID = "crash-run"
RUNNER = """
import json, sys
from recflow.config import from_params
from recflow.pipeline import deploy, export, register
from recflow.pipeline.context import RunContext

params, run_id, stage = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = from_params(params)
ctx = RunContext.create(cfg, "recsys_training", run_id)
{"export": export.run, "register": register.run, "deploy_canary": deploy.deploy_canary}[stage](
    cfg, ctx
)
"""
REACH_TIMEOUT = 600.0  # a safety net for a broken test, never what decides the outcome


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("work")
    port = free_port()
    params = {
        "work_dir": str(work),
        "synthetic_users": 80,
        "synthetic_items": 40,
        "synthetic_seed": 3,
        "model": "ease",
        "floor_ndcg": 0.0,
        "floor_hr": 0.0,
        "min_lift_over_popularity": 0.0,
        "min_users": 10,
        "min_items": 10,
        "min_interactions": 100,
        "top_k": 10,
        "serving_port": port,
        "registered_model_name": REGISTERED,
        "serving_model_name": SERVED,
    }
    cfg = from_params(params)
    server = ModelServerProcess(
        cfg.model_config_file, port=port, log_file=work / "server.log", poll_seconds=0.5
    ).start()
    # Module-scoped: the key must not outlive this module (a later test that checks the
    # generated demo key would read this one instead).
    environ = pytest.MonkeyPatch()
    environ.setenv("RECFLOW_PSEUDONYM_KEY", "k" * 32)
    from recflow.pipeline import features, ingest, train

    ctx = RunContext.create(cfg, "recsys_training", RUN_ID)
    try:
        for stage in (ingest, features, train):
            stage.run(cfg, ctx)
        yield {"work": work, "params": params, "cfg": cfg, "ctx": ctx, "server": server}
    finally:
        server.stop()
        environ.undo()


def run_stage(env: Any, stage: str, *, kill_at: str | None = None) -> None:
    """Run ``stage`` in a subprocess: to the end, or until ``kill_at`` where it is SIGKILLed."""
    faults = env["work"] / "faults"
    marker = faults / f"{(kill_at or '').replace('/', '_')}.reached"
    marker.unlink(missing_ok=True)
    child_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if kill_at:
        child_env |= {"RECFLOW_FAULT_POINT": kill_at, "RECFLOW_FAULT_DIR": str(faults)}
    log = env["work"] / f"{stage}-{kill_at or 'clean'}.log".replace(":", "_")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, json.dumps(env["params"]), RUN_ID, stage],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if kill_at is None:
        assert proc.wait(timeout=REACH_TIMEOUT) == 0, log.read_text()
        return
    deadline = time.monotonic() + REACH_TIMEOUT
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"{stage} ended ({proc.returncode}) before {kill_at}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{stage} did not reach {kill_at}:\n{log.read_text()}")
        time.sleep(0.05)  # waiting for the marker; the kill happens at the point regardless
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def registry(env: Any) -> Any:
    from recflow.pipeline.context import make_registry

    return make_registry(env["cfg"])


def hidden_leftovers(folder: Path) -> list[str]:
    return (
        sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
        if folder.is_dir()
        else []
    )


def test_1_export_killed_before_its_rename_then_rerun(env: Any) -> None:
    from recflow.models import check_contract

    ctx, cfg = env["ctx"], env["cfg"]
    run_stage(env, "export", kill_at="atomic_directory:saved_model")
    # The SavedModel was complete in its scratch folder; the run folder has no half of it.
    assert not ctx.saved_model_dir.exists()
    assert [n for n in hidden_leftovers(ctx.run_dir) if n.startswith(".saved_model.tmp-")]
    run_stage(env, "export", kill_at="export:logged")  # uploaded, run not tagged yet
    assert (ctx.saved_model_dir / "saved_model.pb").is_file()
    run_stage(env, "export")
    check_contract(ctx.saved_model_dir, top_k=cfg.serving.top_k)
    reg = registry(env)
    run_id = reg.find_run(cfg.registry.experiment, {"airflow.dag_run_id": RUN_ID})
    assert "model/saved_model.pb" in reg.list_artifacts(run_id, "model")
    assert reg.get_run(run_id).tags["serving.contract_version"]
    # evaluate and gate (not under test here) prepare the register task
    from recflow.pipeline import evaluate, gate

    evaluate.run(cfg, ctx)
    assert gate.run(cfg, ctx)["passed"]


def test_2_register_killed_before_completion_is_never_aliased_then_rerun(env: Any) -> None:
    from recflow.pipeline import deploy
    from recflow.registry.base import TAG_REGISTRATION

    ctx, cfg = env["ctx"], env["cfg"]
    run_stage(env, "register", kill_at="register:created")
    reg = registry(env)
    [version] = [int(v.version) for v in _versions(env)]
    info = reg.get_version(REGISTERED, version)
    assert info.tags[TAG_REGISTRATION] == "pending" and info.aliases == ()
    assert reg.get_version_by_alias(REGISTERED, "challenger") is None
    for alias in ("challenger", "champion"):
        with pytest.raises(RegistryError, match="not completely registered"):
            reg.set_alias(REGISTERED, alias, version)
    # Deploy refuses it too, before anything is copied to serving.
    ctx.write_json("register.json", {"version": version})
    with pytest.raises(RegistryError, match="not completely registered"):
        deploy.deploy_canary(cfg, ctx)
    assert not (cfg.model_base_path / SERVED).exists()
    (ctx.run_dir / "register.json").unlink()

    run_stage(env, "register", kill_at="register:complete")  # complete, alias not set yet
    assert reg.get_version(REGISTERED, version).tags[TAG_REGISTRATION] == "complete"
    run_stage(env, "register")
    assert [int(v.version) for v in _versions(env)] == [version]  # the same version, completed
    assert reg.get_version_by_alias(REGISTERED, "challenger").version == version
    assert ctx.read_json("register.json") == {"version": version}


def test_3_deploy_killed_while_installing_and_writing_config_then_rerun(env: Any) -> None:
    from recflow.serving.client import ServingClient
    from recflow.serving.model_config import read_entries

    ctx, cfg = env["ctx"], env["cfg"]
    version = int(ctx.read_json("register.json")["version"])
    model_dir = cfg.model_base_path / SERVED
    config_before = cfg.model_config_file.read_text()

    run_stage(env, "deploy_canary", kill_at=f"atomic_directory:{version}")
    # The version was fully copied into a hidden scratch folder, never renamed into place:
    # nothing under <base>/<name>/ has a version number the server would load.
    assert not (model_dir / str(version)).exists()
    assert [n for n in hidden_leftovers(model_dir) if n.startswith(f".{version}.tmp-")]
    assert cfg.model_config_file.read_text() == config_before

    run_stage(env, "deploy_canary", kill_at="atomic_write:models.config")
    assert (model_dir / str(version) / "saved_model.pb").is_file()  # installed in one rename
    assert cfg.model_config_file.read_text() == config_before  # the new config never landed
    assert SERVED not in read_entries(cfg.model_config_file)

    run_stage(env, "deploy_canary")
    entry = read_entries(cfg.model_config_file)[SERVED]
    assert (entry.versions, dict(entry.labels)) == ((version,), {"canary": version})
    assert filecmp.cmp(ctx.saved_model_dir / "saved_model.pb", model_dir / str(version) /
                       "saved_model.pb", shallow=False)  # fmt: skip
    assert registry(env).get_version(REGISTERED, version).tags["serving"] == "canary"
    from recflow.models import load_recommender

    users = ["nobody", *[str(u) for u in _known_users(ctx)[:3]]]
    expected = load_recommender(ctx.saved_model_dir)(np.asarray(users, dtype=object))
    with ServingClient(env["server"].address, timeout=30) as client:
        assert [(v.version, v.state) for v in client.model_status(SERVED)] == [
            (version, "AVAILABLE")
        ]
        served = client.predict(
            SERVED, {"user_id": np.asarray(users, dtype=object)}, label="canary"
        )
    got = [
        [i.decode() if isinstance(i, bytes) else str(i) for i in row] for row in served["item_ids"]
    ]
    assert got == np.asarray(expected["item_ids"]).astype(str).tolist()


def _versions(env: Any) -> list[Any]:
    from mlflow import MlflowClient

    cfg: PipelineConfig = env["cfg"]
    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    return sorted(client.search_model_versions(f"name='{REGISTERED}'"), key=lambda v: v.version)


def _known_users(ctx: RunContext) -> list[str]:
    from recflow.features import load_features

    return [str(u) for u in load_features(ctx.features_dir).user_ids]
