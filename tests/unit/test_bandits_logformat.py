"""Serving-log format v1: write impressions and late rewards, read them back as feedback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recflow.bandits.logformat import BanditLogWriter, read_log, to_feedback
from recflow.bandits.validate import validate_frame
from recflow.errors import DataError, DataSourceError, ValidationFailed

CATALOGUE = ("i1", "i2", "i3", "i4")


def write_sample(path: Path) -> None:
    w = BanditLogWriter(path)
    w.log_impression(
        request_id="r1",
        context=[0.5, 1.0],
        action_ids=["i2", "i4"],
        propensities=[0.6, 0.3],
        policy_name="neural",
        policy_version="3",
        epsilon=0.1,
        timestamp=10.0,
    )
    w.log_impression(
        request_id="r2",
        context=[0.0, -1.0],
        action_ids=["i1", "i3"],
        propensities=[0.25, 0.25],
        policy_name="neural",
        policy_version="4",
        epsilon=0.2,
        timestamp=11.0,
        rewards=[0.0, None],
    )
    w.log_reward(request_id="r1", position=1, action_id="i4", reward=1.0, timestamp=20.0)
    w.log_reward(request_id="r2", position=1, action_id="i3", reward=1.0, timestamp=21.0)
    w.log_reward(request_id="r2", position=1, action_id="i3", reward=0.0, timestamp=19.0)


def test_round_trip_joins_rewards_latest_wins(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_sample(path)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["schema"] == "recflow.bandit_log" and first["version"] == 1
    frame = read_log([path])
    assert list(frame["request_id"]) == ["r1", "r1", "r2", "r2"]
    assert np.isnan(frame["reward"].iloc[0])  # r1 position 0 never got a reward
    assert list(frame["reward"].iloc[1:]) == [1.0, 0.0, 1.0]
    filled = read_log([path], missing_reward=0.0)
    assert validate_frame(filled, CATALOGUE, 2)["success"]
    fb = to_feedback(filled, CATALOGUE, 2)
    assert fb.action.tolist() == [1, 3, 0, 2]
    assert fb.position.tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(fb.pscore, [0.6, 0.3, 0.25, 0.25])
    np.testing.assert_allclose(fb.context[2], [0.0, -1.0])
    assert fb.policy_version == ("3", "3", "4", "4")


def test_missing_rewards_fail_validation(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_sample(path)
    with pytest.raises(ValidationFailed, match="reward"):
        validate_frame(read_log([path]), CATALOGUE, 2)


def test_bad_lines_and_versions_are_named(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_sample(path)
    with path.open("a") as fh:
        fh.write('{"schema": "recflow.bandit_log", "version": 2, "type": "reward"}\n')
    with pytest.raises(DataSourceError, match=r"log.jsonl:6: expected version 1"):
        read_log([path])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"schema": "recflow.bandit_log", "version": 1, "type": "impression"}\n{oops\n'
    )
    with pytest.raises(DataSourceError, match="broken.jsonl:1"):
        read_log([broken])
    with pytest.raises(DataSourceError, match="expected a file"):
        read_log([tmp_path / "absent.jsonl"])


def test_unknown_actions_refused_when_converting(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_sample(path)
    with pytest.raises(DataError, match="unknown"):
        to_feedback(read_log([path], missing_reward=0.0), ("i1", "i2"), 2)
