"""Rollback end to end: a real local model server, the in-memory registry, pipeline stages."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _exported_models import export_popularity

from recflow.config import PipelineConfig, RegistryConfig, ServingConfig
from recflow.errors import PromotionError
from recflow.models import load_recommender
from recflow.net import free_port
from recflow.pipeline import deploy, rollback
from recflow.pipeline.context import RunContext, make_promoter, tracking_run
from recflow.registry import InMemoryRegistry
from recflow.serving.client import ServingClient
from recflow.serving.model_config import read_entries
from recflow.serving.server_process import ModelServerProcess

NAME, SERVED = "rec", "recommender"
USERS = ["user-0", "user-3", "somebody-new"]


def register(cfg: PipelineConfig, registry: InMemoryRegistry, run_id: str, saved: Path) -> Any:
    ctx = RunContext.create(cfg, "recsys_training", run_id)
    shutil.copytree(saved, ctx.saved_model_dir)
    run = tracking_run(cfg, ctx, registry)
    registry.log_artifacts(run, ctx.saved_model_dir, "model")
    version = registry.register_version(NAME, run, "model")
    registry.set_alias(NAME, "challenger", version)
    ctx.write_json("register.json", {"version": version})
    return ctx, version


def served_items(client: ServingClient) -> tuple[int, list[list[str]]]:
    recs = client.recommend(SERVED, USERS, k=5, label="stable")
    return recs[0].model_version, [[i for i, _, _ in r.items] for r in recs]


def offline_items(saved: Path) -> list[list[str]]:
    return load_recommender(saved)(np.asarray(USERS, dtype=object))["item_ids"].tolist()


def test_rollback_to_previous_then_forward_from_the_registry(tmp_path: Path) -> None:
    port = free_port()
    cfg = PipelineConfig(
        work_dir=tmp_path,
        registry=RegistryConfig(tracking_uri="memory:", model_name=NAME),
        serving=ServingConfig(model_name=SERVED, grpc_port=port, load_timeout_seconds=60),
    )
    registry = InMemoryRegistry(tmp_path / "registry")
    models = {v: export_popularity(tmp_path / f"export-{v}", shift=v) for v in (1, 2)}
    assert offline_items(models[1]) != offline_items(models[2])  # versions are distinguishable
    with ModelServerProcess(
        cfg.model_config_file, port=port, log_file=tmp_path / "server.log", poll_seconds=0.5
    ), ServingClient(cfg.server_address, timeout=10) as client:  # fmt: skip
        promoter = make_promoter(cfg)
        for run_id, v in (("run-1", 1), ("run-2", 2)):
            ctx, version = register(cfg, registry, run_id, models[v])
            assert version == v
            promoter.deploy_canary(ctx.saved_model_dir, version)
            deploy.promote(cfg, ctx, registry, promoter)
            if v == 1:  # only one champion so far: nothing to roll back to
                with pytest.raises(PromotionError, match="no version of rec has alias 'previous'"):
                    rollback.run(cfg, RunContext.create(cfg, "recsys_rollback", "early"), registry)
                early = tracking_run(cfg, RunContext.create(cfg, "recsys_rollback", "early"),
                                     registry)  # fmt: skip
                assert registry.get_run(early).status == "FAILED"
        assert served_items(client) == (2, offline_items(models[2]))
        assert registry.get_version_by_alias(NAME, "previous").version == 1

        # roll back to "previous"
        ctx = RunContext.create(cfg, "recsys_rollback", "rb-1")
        out = rollback.run(cfg, ctx, registry, reason="CTR dropped after v2")
        assert out == {"version": 1, "rolled_back": 2, "reason": "CTR dropped after v2"}
        assert served_items(client) == (1, offline_items(models[1]))
        entry = read_entries(cfg.model_config_file)[SERVED]
        assert entry.versions == (1,) and dict(entry.labels) == {"stable": 1}
        assert registry.get_version_by_alias(NAME, "champion").version == 1
        assert registry.get_version_by_alias(NAME, "rolled_back").version == 2
        assert registry.get_version_by_alias(NAME, "previous") is None
        v2 = registry.get_version(NAME, 2)
        assert v2.tags["serving"] == "rolled_back"
        assert v2.tags["rollback.reason"] == "CTR dropped after v2"
        run = registry.get_run(tracking_run(cfg, ctx, registry))
        assert run.status == "FINISHED"
        assert run.tags["rollback.from_version"] == "2" and run.tags["rollback.to_version"] == "1"
        # a retried task changes nothing
        assert rollback.run(cfg, ctx, registry, reason="retry")["version"] == 1

        # forward again to an explicit version whose folder is gone: fetched from the registry
        shutil.rmtree(promoter.model_dir / "2")
        rollback.run(cfg, RunContext.create(cfg, "recsys_rollback", "rb-2"), registry,
                     target_version=2, reason="v2 fixed upstream")  # fmt: skip
        assert served_items(client) == (2, offline_items(models[2]))
        assert registry.get_version_by_alias(NAME, "champion").version == 2
        assert registry.get_version_by_alias(NAME, "rolled_back").version == 1
