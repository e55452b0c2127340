"""PolicyClient writes the serving log: exact slot propensities, versions, late rewards."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from recflow.bandits.client import PolicyClient, UniformPredictor
from recflow.bandits.logformat import read_log
from recflow.bandits.slates import sample_slate, slate_marginals
from recflow.errors import DataError, ServingError

IDS = ("c", "a", "b", "d")  # as served: sorted by score, not catalogue order
PROBS = (0.5, 0.3, 0.15, 0.05)


class FakePredictor:
    """Answers like a served policy; remembers what it was asked."""

    def __init__(self, version: int = 7) -> None:
        self.version = version
        self.calls: list[dict] = []

    def predict_with_version(self, model, inputs, *, version=None, label=None):
        self.calls.append({"model": model, "inputs": inputs, "version": version, "label": label})
        return (
            {
                "action_ids": np.asarray([[a.encode() for a in IDS]], dtype=object),
                "action_scores": np.asarray([[4.0, 3.0, 2.0, 1.0]], np.float32),
                "action_probs": np.asarray([PROBS], np.float32),
            },
            self.version,
        )


def brute_force_marginals(p: np.ndarray, slate: int) -> np.ndarray:
    """Sum over every ordered slate of its Plackett-Luce probability."""
    out = np.zeros((p.size, slate))
    for perm in itertools.permutations(range(p.size), slate):
        prob, left = 1.0, 1.0
        for a in perm:
            prob *= p[a] / left
            left -= p[a]
        for k, a in enumerate(perm):
            out[a, k] += prob
    return out


def test_slate_marginals_are_exact_and_match_sampling() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=3)
    got = slate_marginals(p, 3)
    for row in range(3):
        np.testing.assert_allclose(got[row], brute_force_marginals(p[row], 3), atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)  # each position shows one action
    counts = np.zeros((5, 3))
    for _ in range(6000):
        for k, a in enumerate(sample_slate(p[0], 3, rng)):
            counts[a, k] += 1
    assert np.abs(counts / 6000 - got[0]).max() < 0.03
    # A greedy distribution: later slots fall back to uniform over what is left.
    greedy = slate_marginals(np.array([[1.0, 0.0, 0.0]]), 2)[0]
    np.testing.assert_allclose(greedy[:, 1], [0.0, 0.5, 0.5])


def test_choose_logs_each_slot_with_its_position_propensity(tmp_path: Path) -> None:
    fake = FakePredictor(version=7)
    clock = iter(range(1000, 2000))
    client = PolicyClient(
        fake, tmp_path, model="policy", slate_size=2, seed=3, clock=lambda: float(next(clock))
    )
    slates = [client.choose([0.1, 0.2, 0.3], 0.25) for _ in range(400)]
    call = fake.calls[0]
    assert call["model"] == "policy" and call["label"] == "stable" and call["version"] is None
    assert call["inputs"]["context"].dtype == np.float32
    assert call["inputs"]["context"].shape == (1, 3)
    np.testing.assert_allclose(call["inputs"]["epsilon"], [0.25])

    exact = brute_force_marginals(np.asarray(PROBS), 2)
    frame = read_log([client.log_path])
    assert len(frame) == 800
    assert set(frame["policy_version"]) == {"7"} and set(frame["epsilon"]) == {0.25}
    assert set(frame["policy_name"]) == {"policy"}
    assert frame["reward"].isna().all()  # nothing reported yet
    for _, row in frame.iterrows():
        assert row["pscore"] == pytest.approx(exact[IDS.index(row["action_id"]), row["position"]])
    np.testing.assert_allclose(frame["context"].iloc[0], np.float32([0.1, 0.2, 0.3]))
    assert len({s.request_id for s in slates}) == 400
    assert all(len(set(s.action_ids)) == 2 for s in slates)  # no repeats within a slate
    # The draws follow the served distribution (slot 0 shows "c" half of the time).
    first = np.mean([s.action_ids[0] == "c" for s in slates])
    assert abs(first - 0.5) < 0.08


def test_rewards_join_by_request_and_position(tmp_path: Path) -> None:
    client = PolicyClient(FakePredictor(), tmp_path, slate_size=2, seed=0)
    one = client.choose([1.0], 0.1, request_id="req-1")
    two = client.choose([2.0], 0.1, request_id="req-2")
    client.record_reward("req-1", 1, 1.0)
    client.record_reward("req-2", 0, 0.0)
    client.record_reward("req-2", 0, 1.0)  # a later correction wins
    frame = read_log([client.log_path]).set_index(["request_id", "position"])
    assert frame.loc[("req-1", 1), "reward"] == 1.0
    assert frame.loc[("req-1", 1), "action_id"] == one.action_ids[1]
    assert np.isnan(frame.loc[("req-1", 0), "reward"])
    assert frame.loc[("req-2", 0), "reward"] == 1.0
    assert frame.loc[("req-2", 0), "action_id"] == two.action_ids[0]

    with pytest.raises(DataError, match="position"):
        client.record_reward("req-1", 2, 1.0)
    with pytest.raises(DataError, match="showed"):
        client.record_reward("req-1", 0, 1.0, action_id="not-shown")
    with pytest.raises(DataError, match="action_id="):
        client.record_reward("served-elsewhere", 0, 1.0)
    client.record_reward("served-elsewhere", 0, 1.0, action_id="b")  # accepted with the id


def test_pending_requests_are_bounded(tmp_path: Path) -> None:
    client = PolicyClient(FakePredictor(), tmp_path, seed=0, max_pending=2)
    for i in range(3):
        client.choose([0.0], 0.1, request_id=f"r{i}")
    with pytest.raises(DataError):
        client.record_reward("r0", 0, 1.0)  # forgotten: the caller must name the action
    client.record_reward("r2", 0, 1.0)


def test_non_policy_model_and_bad_epsilon_are_refused(tmp_path: Path) -> None:
    class Recommender(FakePredictor):
        def predict_with_version(self, model, inputs, *, version=None, label=None):
            return {"item_ids": np.zeros((1, 3), object)}, 1

    with pytest.raises(ServingError, match="action_probs"):
        PolicyClient(Recommender(), tmp_path).choose([0.0], 0.1)
    with pytest.raises(ValueError, match="epsilon"):
        PolicyClient(FakePredictor(), tmp_path).choose([0.0], 1.5)


def test_uniform_predictor_bootstraps_a_log(tmp_path: Path) -> None:
    client = PolicyClient(UniformPredictor(["x", "y", "z"]), tmp_path, slate_size=3, seed=0)
    client.choose([0.0, 1.0], 1.0)
    frame = read_log([client.log_path])
    assert sorted(frame["action_id"]) == ["x", "y", "z"]
    np.testing.assert_allclose(frame["pscore"], 1 / 3)  # every slot of a uniform slate
    assert set(frame["policy_version"]) == {"0"}
