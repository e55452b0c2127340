"""Drift and skew measures against known values, and the stage's quarantine / release paths."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from recflow.config import DriftConfig, PipelineConfig, SyntheticConfig
from recflow.data import dataset_digest, generate_synthetic, write_dataset
from recflow.drift import (
    REFERENCE_STATS_FILE,
    DriftDetected,
    activity_bucket,
    append_serving_log,
    compare,
    jensen_shannon,
    l_infinity,
    read_serving_log,
    reference_stats,
)
from recflow.errors import DataError
from recflow.pipeline import drift as stage
from recflow.pipeline.context import RunContext, tracking_run
from recflow.registry import InMemoryRegistry

pytestmark = pytest.mark.unit


def test_jensen_shannon_known_values() -> None:
    assert jensen_shannon({"a": 3, "b": 1}, {"a": 6, "b": 2}) == pytest.approx(0.0)
    assert jensen_shannon({"a": 1}, {"b": 5}) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2): JSD = 1 - (3/4) * H2(1/3, 2/3) ... closed form below
    m = (0.75, 0.25)
    kl_p = math.log2(1 / m[0])
    kl_q = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    assert jensen_shannon({"a": 1}, {"a": 1, "b": 1}) == pytest.approx(0.5 * (kl_p + kl_q))
    assert 0.31127 < jensen_shannon({"a": 1}, {"a": 1, "b": 1}) < 0.31128


def test_l_infinity_and_activity_buckets() -> None:
    assert l_infinity({"1": 1, "5": 1}, {"1": 1, "5": 3}) == pytest.approx(0.25)
    assert [activity_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 100)] == [
        "1",
        "2",
        "3-4",
        "3-4",
        "5-8",
        "5-8",
        "9-16",
        "65-128",
    ]


def _ds(seed: int = 7):
    return generate_synthetic(SyntheticConfig(n_users=120, n_items=80, seed=seed))


def _planted(ds):
    """Only the 5 most popular items: a batch from a broken logger or a bot."""
    inter = ds.interactions
    top = inter["item_id"].value_counts().index[:5]
    return dataclasses.replace(
        ds, interactions=inter[inter["item_id"].isin(top)].reset_index(drop=True)
    )


def test_same_data_passes_and_planted_drift_fails_with_defaults() -> None:
    ref = reference_stats(_ds())
    assert all(c.passed for c in compare(ref, ref, DriftConfig()))
    checks = {c.name: c for c in compare(reference_stats(_planted(_ds())), ref, DriftConfig())}
    assert not checks["item_popularity_jsd"].passed
    assert checks["item_popularity_jsd"].value > 0.5


def test_unseen_shares_and_serving_skew(tmp_path) -> None:
    ref = {
        "item_counts": {"i1": 5, "i2": 5},
        "user_counts": {"u1": 4, "u2": 4},
        "user_activity_hist": {"3-4": 2},
        "rating_counts": {"1": 10},
    }
    batch = {
        "item_counts": {"i1": 1, "i3": 1},
        "user_counts": {"u1": 1, "u3": 1, "u4": 1, "u5": 1},
        "user_activity_hist": {"1": 4},
        "rating_counts": {"1": 2},
    }
    append_serving_log(tmp_path, "m", ["u1", "u9", "u9", "u2"], now=0.0)
    append_serving_log(tmp_path, "m", ["u9"], now=1.0)
    requests = read_serving_log(tmp_path)
    assert requests == {"u1": 1, "u9": 3, "u2": 1}
    checks = {c.name: c for c in compare(batch, ref, DriftConfig(), requests)}
    assert checks["unseen_users"].value == pytest.approx(0.75)
    assert checks["unseen_items"].value == pytest.approx(0.5)
    assert checks["serving_unknown_users"].value == pytest.approx(0.6)
    assert not checks["serving_unknown_users"].passed
    assert read_serving_log(tmp_path / "none") is None


def _run(tmp_path, ds, registry, run_id: str, **drift):
    cfg = PipelineConfig(work_dir=tmp_path, drift=DriftConfig(**drift))
    ctx = RunContext.create(cfg, "recsys_training", run_id)
    write_dataset(ds, ctx.data_dir)
    ctx.write_json("ingest.json", {"digest": dataset_digest(ds)})
    return cfg, ctx


def test_stage_skips_without_champion_then_quarantines_planted_drift(tmp_path) -> None:
    registry = InMemoryRegistry(tmp_path / "artifacts")
    cfg, ctx = _run(tmp_path, _ds(), registry, "first")
    out = stage.run(cfg, ctx, registry)
    assert out["status"] == "skipped"
    # make that run the champion: its reference stats become the baseline
    run = tracking_run(cfg, ctx, registry)
    version = registry.register_version(cfg.registry.model_name, run, REFERENCE_STATS_FILE)
    registry.set_alias(cfg.registry.model_name, "champion", version)

    cfg2, ctx2 = _run(tmp_path, _planted(_ds()), registry, "second")
    with pytest.raises(DriftDetected) as info:
        stage.run(cfg2, ctx2, registry)
    assert isinstance(info.value, DataError)
    where = stage.quarantine_dir(cfg2, ctx2)
    assert str(where) in str(info.value) and "accept_drift" in str(info.value)
    assert (where / "data" / "interactions.parquet").is_file()
    reason = json.loads((where / "reason.json").read_text())
    assert reason["status"] == "failed"
    assert "item_popularity_jsd" in (where / "REASON.txt").read_text()
    run2 = registry.get_run(tracking_run(cfg2, ctx2, registry))
    assert run2.tags["quarantine"] == "true" and run2.status == "FAILED"
    assert run2.metrics["drift.item_popularity_jsd"] > 0.5
    assert (ctx2.data_docs_dir / "drift" / "index.html").read_text().count("FAIL") >= 1

    # the operator releases it: same batch, accept_drift -> reported, not blocking
    cfg3, ctx3 = _run(tmp_path, _planted(_ds()), registry, "third", accept_drift=True)
    out = stage.run(cfg3, ctx3, registry)
    assert out["status"] == "accepted"
    assert registry.get_run(tracking_run(cfg3, ctx3, registry)).tags["drift"] == "accepted"
