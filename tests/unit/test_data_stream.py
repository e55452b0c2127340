"""The streaming generator: shards of the requested size, the requested skew, readable."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from recflow.data.stream import (
    ITEMS_FILE,
    MANIFEST_FILE,
    StreamConfig,
    stream_truth,
    top_share,
    write_stream,
)
from recflow.errors import ConfigError


def test_shards_have_the_requested_size(tmp_path) -> None:
    cfg = StreamConfig(n_events=20_000, n_users=1_000, n_items=400, shard_events=3_000)
    shards = write_stream(cfg, tmp_path)
    sizes = [len(pd.read_parquet(p)) for p in sorted(shards.glob("part-*.parquet"))]
    assert sizes == [3_000] * 6 + [2_000]
    frame = pd.read_parquet(shards)
    assert frame.groupby("user_id").size().min() >= 3  # leave-last-out needs 3
    assert not frame.duplicated(["user_id", "timestamp"]).any()
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["shards"] == 7


def test_item_and_user_skew_follow_the_target_power_law(tmp_path) -> None:
    cfg = StreamConfig(
        n_events=200_000, n_users=5_000, n_items=3_000, shard_events=50_000, distinct=False
    )
    frame = pd.read_parquet(write_stream(cfg, tmp_path))
    truth = stream_truth(cfg)
    target = top_share(truth.expected_item_probability(cfg.taste), 0.01)
    realised = top_share(frame["item_id"].value_counts().to_numpy(), 0.01)
    assert target > 0.3  # a real long tail: 1% of items take a third of the events
    assert realised == pytest.approx(target, abs=0.01)
    # Users: the top 1% of users hold what the activity power law gave them.
    user_share = top_share(frame["user_id"].value_counts().to_numpy(), 0.01)
    assert user_share == pytest.approx(top_share(truth.user_events, 0.01), abs=1e-9)
    assert user_share > 0.05


def test_distinct_pairs_and_the_parquet_reader(tmp_path) -> None:
    from recflow.data import read_table

    cfg = StreamConfig(n_events=30_000, n_users=1_500, n_items=2_000, shard_events=7_000)
    shards = write_stream(cfg, tmp_path)
    ds = read_table(shards, items_path=tmp_path / ITEMS_FILE, file_format="parquet")
    assert len(ds.interactions) == 30_000 and len(ds.items) == 2_000
    repeated = ds.interactions.duplicated(["user_id", "item_id"]).mean()
    with_repeats = pd.read_parquet(
        write_stream(dataclasses.replace(cfg, distinct=False), tmp_path / "r")
    ).duplicated(["user_id", "item_id"])
    assert repeated < 0.05 and repeated < with_repeats.mean() / 5
    assert set(ds.interactions["item_id"]) <= set(ds.items["item_id"])


def test_too_few_events_is_refused() -> None:
    with pytest.raises(ConfigError, match="n_events >= 3 x n_users"):
        stream_truth(StreamConfig(n_events=100, n_users=50, n_items=10))


def test_memory_is_not_users_by_items() -> None:
    """The planted truth is O(users + items): no [users, items] array anywhere."""
    truth = stream_truth(StreamConfig(n_events=3_000_000, n_users=600_000, n_items=50_000))
    sizes = [np.asarray(v).size for v in vars(truth).values()]
    assert max(sizes) == 600_000
