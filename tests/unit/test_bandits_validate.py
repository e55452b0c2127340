"""Great Expectations checks of logged feedback: clear failures for bad propensities and rewards."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.bandits.feedback import LoggedFeedback
from recflow.bandits.validate import feedback_frame, validate_feedback, validate_frame
from recflow.errors import ValidationFailed

IDS = ("a", "b", "c", "d")


def feedback(n: int = 60, **changes: np.ndarray) -> LoggedFeedback:
    rng = np.random.default_rng(0)
    arrays = {
        "context": rng.normal(size=(n, 2)),
        "action": rng.integers(0, 4, n),
        "position": rng.integers(0, 2, n),
        "reward": rng.integers(0, 2, n).astype(float),
        "pscore": np.full(n, 0.125),
    }
    arrays.update(changes)
    return LoggedFeedback(**arrays, action_ids=IDS, len_list=2)


def failed(fb: LoggedFeedback) -> dict[tuple[str, str], dict]:
    with pytest.raises(ValidationFailed) as info:
        validate_feedback(fb)
    return {(f["column"], f["expectation"]): f for f in info.value.failures}


def test_clean_feedback_passes() -> None:
    report = validate_feedback(feedback())
    assert report["success"] and report["expectations_failed"] == 0
    assert report["rounds"] == 60


def test_zero_and_missing_propensities_are_reported_with_rows() -> None:
    pscore = np.full(60, 0.125)
    pscore[[3, 9]] = 0.0
    pscore[12] = np.nan
    pscore[20] = 1.5
    failures = failed(feedback(pscore=pscore))
    between = failures[("pscore", "expect_column_values_to_be_between")]
    assert between["observed"]["unexpected_count"] == 3
    assert {r["row"] for r in between["sample_rows"]} == {3, 9, 20}
    assert between["expected"]["strict_min"] is True
    assert ("pscore", "expect_column_values_to_not_be_null") in failures


def test_missing_and_non_binary_rewards() -> None:
    reward = np.zeros(60)
    reward[5] = np.nan
    reward[6] = 0.5
    failures = failed(feedback(reward=reward))
    assert failures[("reward", "expect_column_values_to_not_be_null")]["sample_rows"][0]["row"] == 5
    assert ("reward", "expect_column_values_to_be_in_set") in failures


def test_actions_outside_catalogue_positions_out_of_range_and_bad_context() -> None:
    fb = feedback()
    frame = feedback_frame(fb)
    frame.loc[2, "action_id"] = "zzz"
    frame.loc[4, "position"] = 2
    frame.loc[7, "context_ok"] = False
    with pytest.raises(ValidationFailed) as info:
        validate_frame(frame, IDS, 2)
    columns = {f["column"] for f in info.value.failures}
    assert columns == {"action_id", "position", "context_ok"}
    assert "zzz" in str(info.value)
    assert "expected" in str(info.value) and "found" in str(info.value)
