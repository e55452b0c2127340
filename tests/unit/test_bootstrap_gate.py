"""Bootstrap intervals and the champion rule decided on a paired bootstrap over users."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from recflow.config import GateConfig
from recflow.errors import ConfigError, DataError
from recflow.evaluation.bootstrap import bootstrap_mean, paired_bootstrap
from recflow.gate import decide

K = 10
CFG = GateConfig(floors={}, min_lift_over_popularity=0.1, bootstrap_samples=500)


def _champion_scores() -> np.ndarray:
    """Per-user NDCG-like values for 800 users: a hit rate of 30 % with graded ranks."""
    rng = np.random.default_rng(0)  # its own seeded stream, used once here
    hits = rng.random(800) < 0.3
    values = np.where(hits, 1 / np.log2(rng.integers(1, 11, 800) + 1), 0.0)
    values.setflags(write=False)
    return values


CHAMP = _champion_scores()  # fixed, read-only data; the tests draw their noise from ``rng``


@pytest.fixture()
def rng() -> np.random.Generator:
    """Each test its own seeded stream: the outcome cannot depend on which tests ran before."""
    return np.random.default_rng(1)


POP = {"ndcg@10": 0.05}


def metrics(per_user: np.ndarray) -> dict[str, float]:
    return {"ndcg@10": float(per_user.mean())}


def test_bootstrap_mean_covers_the_mean_and_shrinks_with_more_users() -> None:
    small = bootstrap_mean(CHAMP[:100], samples=500)
    large = bootstrap_mean(CHAMP, samples=500)
    assert large.low <= CHAMP.mean() <= large.high
    assert (large.high - large.low) < (small.high - small.low)
    # Standard error of a mean: the 95 % width is about 2 x 1.96 x sd / sqrt(n).
    expected = 2 * 1.96 * CHAMP.std() / np.sqrt(CHAMP.size)
    assert large.high - large.low == pytest.approx(expected, rel=0.2)


def test_paired_interval_of_identical_models_is_zero_and_checks_shapes() -> None:
    ci = paired_bootstrap(CHAMP, CHAMP.copy())
    assert (ci.mean, ci.low, ci.high) == (0.0, 0.0, 0.0)
    with pytest.raises(DataError, match="same users"):
        paired_bootstrap(CHAMP, CHAMP[:10])
    with pytest.raises(ConfigError, match="confidence"):
        bootstrap_mean(CHAMP, confidence=1.5)


def _decide(candidate: np.ndarray, rule: str, **changes):
    cfg = dataclasses.replace(CFG, rule=rule, **changes)
    return decide(
        metrics(candidate), POP, metrics(CHAMP), cfg, K,
        candidate_per_user=candidate, champion_per_user=CHAMP,
    )  # fmt: skip


@pytest.mark.parametrize("rule", ["non-inferiority", "superiority"])
def test_clearly_better_model_is_promoted(rule: str, rng: np.random.Generator) -> None:
    better = np.minimum(CHAMP + np.where(rng.random(800) < 0.3, 0.3, 0.0), 1.0)
    d = _decide(better, rule)
    assert d.passed, d.summary()
    check = d.checks[-1]
    assert check.interval is not None and check.interval[0] > 0
    assert "paired bootstrap" in check.message


@pytest.mark.parametrize("rule", ["non-inferiority", "superiority"])
def test_clearly_worse_model_is_blocked(rule: str, rng: np.random.Generator) -> None:
    worse = np.where(rng.random(800) < 0.5, 0.0, CHAMP)
    d = _decide(worse, rule)
    assert not d.passed
    assert d.checks[-1].interval[1] < 0
    assert any(f"fails {rule}" in r for r in d.reasons)


def test_identical_model_passes_non_inferiority_and_fails_superiority() -> None:
    assert _decide(CHAMP.copy(), "non-inferiority").passed
    sup = _decide(CHAMP.copy(), "superiority")
    assert not sup.passed and "lower end above min_improvement" in sup.summary()


def test_noise_neither_promotes_nor_blocks(rng: np.random.Generator) -> None:
    # A tiny mean gain that a mean comparison would call "superior" but the interval spans 0.
    swap = rng.permutation(800)[:40]
    noisy = CHAMP.copy()
    noisy[swap] = rng.permutation(CHAMP[swap]) + 1e-3
    assert noisy.mean() > CHAMP.mean()
    assert not _decide(noisy, "superiority").passed
    assert _decide(noisy, "non-inferiority", tolerance=0.01).passed


def test_without_per_user_values_the_mean_rule_still_applies() -> None:
    d = decide(metrics(CHAMP), POP, metrics(CHAMP), CFG, K)
    assert d.passed and d.checks[-1].interval is None


def test_slice_floors_block_and_name_the_slice() -> None:
    slices = {"activity:cold": {"ndcg@10": 0.01}, "popularity:tail": {"ndcg@10": 0.2}}
    cfg = dataclasses.replace(CFG, slice_floors={"activity:cold": 0.02, "popularity:tail": 0.1})
    d = decide(metrics(CHAMP), POP, None, cfg, K, slices=slices)
    assert not d.passed
    assert d.reasons == ["activity:cold ndcg@10 0.0100 is below the floor 0.0200"]
    ok = dataclasses.replace(cfg, slice_floors={"popularity:tail": 0.1})
    assert decide(metrics(CHAMP), POP, None, ok, K, slices=slices).passed
    with pytest.raises(ConfigError, match="genre:Nope"):
        decide(
            metrics(CHAMP), POP, None,
            dataclasses.replace(CFG, slice_floors={"genre:Nope": 0.1}), K, slices=slices,
        )  # fmt: skip


def test_decision_with_interval_is_json_able() -> None:
    d = _decide(CHAMP.copy(), "non-inferiority")
    back = json.loads(json.dumps(d.to_dict()))
    assert back["checks"][-1]["interval"] == [0.0, 0.0]
