"""The pipeline's stages (ingest -> ... -> gate -> register) with an in-memory registry, run
twice: a champion on one catalogue, then a candidate on a mostly different one. The gate
declines it unless the trigger allows the catalogue change, and every registered version
records its catalogue (issue 13, item 5)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recflow.config import PipelineConfig, from_params
from recflow.pipeline import evaluate, export, features, gate, ingest, register, train
from recflow.pipeline.context import RunContext
from recflow.registry import InMemoryRegistry

MODEL = "catalogue-test"
SMALL = {"synthetic_users": 80, "synthetic_items": 40, "synthetic_seed": 3, "model": "ease",
         "registered_model_name": MODEL, "min_lift_over_popularity": 0.0, "floor_ndcg": 0.0,
         "floor_hr": 0.0, "top_k": 10}  # fmt: skip


def run_until_register(
    cfg: PipelineConfig, registry: InMemoryRegistry, run_id: str
) -> tuple[RunContext, dict[str, Any]]:
    ctx = RunContext.create(cfg, "recsys_training", run_id)
    for stage in (ingest, features, train, export, evaluate):
        stage.run(cfg, ctx, registry)
    return ctx, gate.run(cfg, ctx, registry)


def renamed_catalogue(tmp_path: Path, keep: int) -> dict[str, str]:
    """The synthetic data as csv files in which only items 1..keep keep their ids."""
    from recflow.config import SyntheticConfig
    from recflow.data import generate_synthetic

    ds = generate_synthetic(SyntheticConfig(n_users=80, n_items=40, seed=3))
    rename = {str(i): (str(i) if i <= keep else f"new-{i}") for i in range(1, 41)}
    inter = ds.interactions.astype(object).assign(item_id=lambda d: d["item_id"].map(rename))
    items = ds.items.astype(object).assign(item_id=lambda d: d["item_id"].map(rename))
    inter.to_csv(tmp_path / "events.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    return {"data_source": "csv", "data_path": str(tmp_path / "events.csv"),
            "items_path": str(tmp_path / "items.csv")}  # fmt: skip


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InMemoryRegistry, dict]]:
    """One champion for the module; each test's runs have their own run ids."""
    tmp_path = tmp_path_factory.mktemp("champion")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("RECFLOW_PSEUDONYM_KEY", "k" * 32)
    params = {**SMALL, "work_dir": str(tmp_path / "work")}
    registry = InMemoryRegistry(tmp_path / "registry")
    cfg = from_params(params)
    ctx, decision = run_until_register(cfg, registry, "first")
    assert decision["passed"], decision["reasons"]
    assert not [c for c in decision["checks"] if c["name"] == "catalogue"]  # nothing to compare
    version = register.run(cfg, ctx, registry)["version"]
    registry.set_alias(MODEL, "champion", version)  # as promote does after the canary
    yield registry, params
    monkeypatch.undo()


def test_every_version_records_its_catalogue(champion: tuple[InMemoryRegistry, dict]) -> None:
    registry, _ = champion
    tags = registry.get_version(MODEL, 1).tags
    assert tags["catalogue.size"] == "40"
    assert tags["catalogue.source"] == "synthetic"
    assert len(tags["catalogue.digest"]) == 64


def test_a_candidate_on_another_catalogue_is_declined_then_allowed(
    champion: tuple[InMemoryRegistry, dict], tmp_path: Path
) -> None:
    registry, params = champion
    data = renamed_catalogue(tmp_path, keep=20)  # half the champion's items
    cfg = from_params({**params, **data})
    ctx, declined = run_until_register(cfg, registry, "second")
    assert not declined["passed"]
    [check] = [c for c in declined["checks"] if c["name"] == "catalogue"]
    assert not check["passed"] and check["value"] == pytest.approx(0.5)
    assert "catalogue changed" in check["message"] and check["message"] in declined["reasons"]
    assert declined["catalogue"]["overlap"]["shared"] == 20
    assert declined["catalogue"]["champion"]["source"] == "synthetic"
    assert declined["allow_catalogue_change"] is False
    run = registry.get_run(registry.find_run(cfg.registry.experiment,
                                             {"airflow.dag_run_id": "second"}))  # fmt: skip
    assert run.tags["gate"] == "declined" and run.tags["gate.catalogue_overlap"] == "0.5000"
    # The champion comparison ranked only the 20 shared items, for both models.
    evaluation = ctx.read_json("evaluation.json")
    assert (
        evaluation["candidate_on_shared"]["validation"]["users"]
        == (evaluation["champion"]["validation"]["users"])
    )
    assert (
        evaluation["candidate_on_shared"]["validation"]["users"]
        < evaluation["candidate"]["validation"]["users"]
    )

    allowed_cfg = from_params({**params, **data, "allow_catalogue_change": True})
    ctx, allowed = run_until_register(allowed_cfg, registry, "third")
    [check] = [c for c in allowed["checks"] if c["name"] == "catalogue"]
    assert check["passed"] and "allowed by the trigger" in check["message"]
    assert allowed["allow_catalogue_change"] is True
    run = registry.get_run(registry.find_run(cfg.registry.experiment,
                                             {"airflow.dag_run_id": "third"}))  # fmt: skip
    assert run.tags["gate.allow_catalogue_change"] == "true"
    if allowed["passed"]:
        version = register.run(allowed_cfg, ctx, registry)["version"]
        tags = registry.get_version(MODEL, version).tags
        assert tags["gate.allow_catalogue_change"] == "true"
        assert tags["catalogue.source"].startswith("csv:")


def test_a_retrained_champion_on_the_same_catalogue_is_compared_as_before(
    champion: tuple[InMemoryRegistry, dict],
) -> None:
    registry, params = champion
    cfg = from_params({**params, "synthetic_seed": 4})  # new events, same item ids
    ctx, decision = run_until_register(cfg, registry, "retrain")
    [check] = [c for c in decision["checks"] if c["name"] == "catalogue"]
    assert check["passed"] and check["value"] == 1.0
    evaluation = ctx.read_json("evaluation.json")
    assert "candidate_on_shared" not in evaluation  # the whole split, as before
    assert (
        evaluation["catalogue"]["candidate"]["digest"]
        == (evaluation["catalogue"]["champion"]["digest"])
    )
