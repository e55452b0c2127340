"""Infra validation in a real sandboxed recflow-model-server, and the pipeline stage's records."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _exported_models import export_noisy, export_popularity, truncate_variables

from recflow.config import PipelineConfig, RegistryConfig, ServingConfig
from recflow.errors import ModelNotReady, VerificationFailed
from recflow.pipeline import infra_validate
from recflow.pipeline.context import RunContext, tracking_run
from recflow.registry import InMemoryRegistry


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_popularity(tmp_path_factory.mktemp("good") / "model")


def _pipeline(tmp_path: Path, saved: Path) -> tuple[PipelineConfig, RunContext, InMemoryRegistry]:
    cfg = PipelineConfig(
        work_dir=tmp_path,
        registry=RegistryConfig(tracking_uri="memory:", model_name="rec"),
        serving=ServingConfig(infra_load_timeout_seconds=60, infra_server="recflow-model-server"),
    )
    ctx = RunContext.create(cfg, "recsys_training", "run-1")
    shutil.copytree(saved, ctx.saved_model_dir)
    registry = InMemoryRegistry(tmp_path / "registry")
    run = tracking_run(cfg, ctx, registry)
    registry.log_artifacts(run, ctx.saved_model_dir, "model")
    version = registry.register_version("rec", run, "model")
    registry.set_alias("rec", "challenger", version)
    ctx.write_json("register.json", {"version": version})
    return cfg, ctx, registry


def test_stage_records_pass_and_refusal(good: Path, tmp_path: Path) -> None:
    cfg, ctx, registry = _pipeline(tmp_path / "ok", good)
    out = infra_validate.run(cfg, ctx, registry)
    assert out["passed"] and out["version"] == 1
    assert registry.get_version("rec", 1).tags["infra_validation"] == "passed"
    assert registry.get_version_by_alias("rec", "challenger") is not None
    result = ctx.read_json("infra_validation.json")
    assert result["passed"] is True and result["server"] == "recflow-model-server"
    assert result["requests"] == 2  # one warmup request (6 users) + the cold-start user
    assert result["rows"] == 7 and result["problems"] == []
    assert not list(ctx.run_dir.glob("recflow-infra-*"))  # the sandbox cleaned up after itself

    broken = truncate_variables(Path(shutil.copytree(good, tmp_path / "broken")))
    cfg, ctx, registry = _pipeline(tmp_path / "bad", broken)
    with pytest.raises(
        ModelNotReady, match="infra validation refused rec version 1: .*failed to load"
    ):
        infra_validate.run(cfg, ctx, registry)
    info = registry.get_version("rec", 1)
    assert info.tags["infra_validation"].startswith("failed: the SavedModel failed to load")
    assert registry.get_version_by_alias("rec", "challenger") is None
    run = registry.get_run(tracking_run(cfg, ctx, registry))
    assert run.status == "FAILED"
    assert run.tags["infra_validation"] == "failed"
    assert "failed to load" in run.tags["infra_validation.reason"]
    assert run.tags["infra_validation.server"] == "recflow-model-server"  # who judged
    result = ctx.read_json("infra_validation.json")
    assert result["attempts"] == 1  # the model's fault: no retry
    assert result["load_seconds"] is None
    # Nothing of the refused candidate reached production's base path or model config.
    production = [cfg.model_base_path, cfg.model_config_file]
    assert not [p for p in production if p.exists() and (p.is_file() or any(p.iterdir()))]


def test_stage_refuses_wrong_answers_with_verification_failed(tmp_path: Path) -> None:
    cfg, ctx, registry = _pipeline(tmp_path, export_noisy(tmp_path / "noisy"))
    with pytest.raises(VerificationFailed, match="served answers differ"):
        infra_validate.run(cfg, ctx, registry)
    assert registry.get_version("rec", 1).tags["infra_validation"].startswith("failed: served")
    assert registry.get_version_by_alias("rec", "challenger") is None
    result = ctx.read_json("infra_validation.json")
    assert result["load_seconds"] is not None  # it loaded fine; its answers are the problem
    assert any("output 'scores'" in p for p in result["problems"])


def test_a_tensorflow_model_server_on_path_is_the_one_that_judges(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default choice (""), a ``tensorflow_model_server`` on PATH is started and named
    in the records. The executable here is a shim that execs recflow-model-server with the
    flags it was given: this shows which binary is picked and recorded, not how the real
    one behaves (docs/production.md says where that was, and was not, exercised)."""
    import dataclasses
    import os
    import sys

    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "tensorflow_model_server"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m recflow.serving.server "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim_dir}{os.pathsep}{os.environ['PATH']}")
    cfg, ctx, registry = _pipeline(tmp_path / "ok", good)
    cfg = dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, infra_server=""))
    out = infra_validate.run(cfg, ctx, registry)
    assert out["passed"]
    assert ctx.read_json("infra_validation.json")["server"] == "tensorflow_model_server"
    run = registry.get_run(tracking_run(cfg, ctx, registry))
    assert run.tags["infra_validation.server"] == "tensorflow_model_server"
