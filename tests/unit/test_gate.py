from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from recflow.config import GateConfig
from recflow.errors import ConfigError
from recflow.evaluation import evaluate_scorer, popularity_scorer, random_scorer
from recflow.features import build_features, split_leave_last_out
from recflow.gate import decide
from recflow.schema import GENRES, ITEM_ID, TIMESTAMP, TITLE, USER_ID
from recflow.types import Features

K = 10
GENRE_NAMES = ("Action", "Comedy", "Drama", "Horror")


def planted_dataset(seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users with one favourite genre (90% of their events); Zipf popularity inside a genre."""
    rng = np.random.default_rng(seed)
    n_users, per_genre, n_events = 200, 40, 20
    n_items = per_genre * len(GENRE_NAMES)
    item_genre = np.repeat(np.arange(len(GENRE_NAMES)), per_genre)
    weight = np.tile(1.0 / np.arange(1, per_genre + 1), len(GENRE_NAMES))
    rows = []
    for u in range(n_users):
        favourite = u % len(GENRE_NAMES)
        p = weight * np.where(item_genre == favourite, 9.0, 1.0 / 3.0)
        chosen = rng.choice(n_items, n_events, replace=False, p=p / p.sum())
        rows += [(f"u{u}", f"i{i}", t) for t, i in enumerate(chosen)]
    events = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, TIMESTAMP])
    items = pd.DataFrame(
        {
            ITEM_ID: [f"i{i}" for i in range(n_items)],
            TITLE: [f"Item {i}" for i in range(n_items)],
            GENRES: [GENRE_NAMES[g] for g in item_genre],
        }
    )
    return events, items


def genre_oracle(f: Features):
    """Uses only the user's TRAINING genre shares (plus popularity to order within a genre)."""
    table = f.user_genre_pref @ f.item_genres.T + 0.1 * f.item_popularity[None, :]
    row = {u: i for i, u in enumerate(f.user_ids)}

    def score(user_ids: np.ndarray):
        return table[[row[u] for u in user_ids]], f.item_ids

    return score


@pytest.fixture(scope="module")
def metrics() -> dict[str, dict[str, float]]:
    events, items = planted_dataset()
    split = split_leave_last_out(events)
    f = build_features(split.train, items)
    scorers = {
        "oracle": genre_oracle(f),
        "popularity": popularity_scorer(f),
        "random": random_scorer(f, seed=0),
    }
    return {name: evaluate_scorer(s, split, f, k=K) for name, s in scorers.items()}


CFG = GateConfig(floors={"ndcg": 0.05, "hr": 0.1}, min_lift_over_popularity=0.1)


def test_planted_tastes_make_the_oracle_beat_popularity_beat_random(metrics) -> None:
    assert metrics["oracle"]["ndcg@10"] > 1.5 * metrics["popularity"]["ndcg@10"]
    assert metrics["popularity"]["ndcg@10"] > metrics["random"]["ndcg@10"]


def test_sound_model_passes_without_champion(metrics) -> None:
    d = decide(metrics["oracle"], metrics["popularity"], None, CFG, K)
    assert d.passed, d.summary()
    assert [c.name for c in d.checks] == ["floor", "floor", "lift_over_popularity", "champion"]
    champion = d.checks[-1]
    assert champion.skipped and champion.passed and champion.threshold is None
    assert any("beats popularity" in r for r in d.reasons)
    assert any("skipped" in r for r in d.reasons)


def test_random_scores_fail(metrics) -> None:
    d = decide(metrics["random"], metrics["popularity"], None, CFG, K)
    assert not d.passed
    assert any("does not beat popularity" in r for r in d.reasons)
    assert all("skipped" not in r for r in d.reasons)  # only failures are listed
    assert d.summary().startswith("gate failed: ") and "\n" not in d.summary()


def test_popularity_clone_fails_even_with_zero_lift(metrics) -> None:
    cfg = dataclasses.replace(CFG, min_lift_over_popularity=0.0, floors={})
    d = decide(metrics["popularity"], metrics["popularity"], None, cfg, K)
    assert not d.passed


@pytest.mark.parametrize("rule", ["non-inferiority", "superiority"])
def test_worse_than_champion_fails_under_both_rules(metrics, rule: str) -> None:
    champion = metrics["oracle"]
    candidate = {**champion, "ndcg@10": champion["ndcg@10"] - 0.02}
    cfg = dataclasses.replace(CFG, rule=rule, tolerance=0.005)
    d = decide(candidate, metrics["popularity"], champion, cfg, K)
    assert not d.passed
    assert d.reasons == [r for r in d.reasons if f"fails {rule}" in r]


def test_equal_to_champion_passes_non_inferiority_and_fails_superiority(metrics) -> None:
    champ = metrics["oracle"]
    ni = decide(champ, metrics["popularity"], champ, CFG, K)
    sup = decide(
        champ, metrics["popularity"], champ, dataclasses.replace(CFG, rule="superiority"), K
    )
    assert ni.passed and not sup.passed
    assert ni.checks[-1].baseline == champ["ndcg@10"]
    assert ni.checks[-1].threshold == pytest.approx(champ["ndcg@10"] - CFG.tolerance)


def test_tolerance_and_min_improvement_thresholds() -> None:
    pop = {"ndcg@5": 0.1, "hr@5": 0.2}
    champ = {"ndcg@5": 0.3, "hr@5": 0.5}
    cfg = GateConfig(floors={}, tolerance=0.01)
    assert decide({"ndcg@5": 0.295}, pop, champ, cfg, 5).passed
    assert not decide({"ndcg@5": 0.285}, pop, champ, cfg, 5).passed
    sup = dataclasses.replace(cfg, rule="superiority", min_improvement=0.02)
    assert not decide({"ndcg@5": 0.31}, pop, champ, sup, 5).passed
    assert decide({"ndcg@5": 0.32}, pop, champ, sup, 5).passed


def test_floor_failure_message_names_value_and_floor() -> None:
    d = decide(
        {"ndcg@10": 0.031, "hr@10": 0.4},
        {"ndcg@10": 0.01},
        None,
        GateConfig(floors={"ndcg": 0.05}),
        K,
    )
    assert not d.passed
    assert d.reasons == ["ndcg@10 0.0310 is below the floor 0.0500"]


def test_nan_candidate_fails() -> None:
    d = decide({"ndcg@10": float("nan")}, {"ndcg@10": 0.1}, None, GateConfig(floors={}), K)
    assert not d.passed and "NaN" in d.summary()


def test_missing_floor_metric_or_unknown_rule_raise_config_error(metrics) -> None:
    cfg = dataclasses.replace(CFG, floors={"recall": 0.1})
    with pytest.raises(ConfigError, match=r"'recall@10'.*found only \['coverage@10', 'hr@10'"):
        decide(metrics["oracle"], metrics["popularity"], None, cfg, K)
    # an unknown rule never reaches decide: the config refuses it where it is built
    with pytest.raises(ConfigError, match="gate_rule: expected one of"):
        dataclasses.replace(CFG, rule="vibes")


def test_to_dict_is_json_able(metrics) -> None:
    d = decide(metrics["oracle"], metrics["popularity"], metrics["oracle"], CFG, K)
    back = json.loads(json.dumps(d.to_dict()))
    assert back["passed"] is d.passed
    assert [c["name"] for c in back["checks"]] == [c.name for c in d.checks]
    assert {"metric", "value", "threshold", "passed", "baseline"} <= set(back["checks"][0])
