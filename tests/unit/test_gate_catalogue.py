"""Comparable champions only (issue 13): the gate compares models that know the same items."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recflow import catalogue as cat
from recflow.config import GateConfig, from_params
from recflow.errors import ConfigError
from recflow.gate import decide

K = 10
GOOD = {"ndcg@10": 0.20, "hr@10": 0.40}
POPULARITY = {"ndcg@10": 0.05, "hr@10": 0.10}
CFG = GateConfig(floors={"ndcg": 0.02})


def record(candidate: list[str], champion: list[str]) -> dict:
    cand = cat.from_ids(candidate, "csv:/data/new.csv")
    champ = cat.from_ids(champion, "movielens-100k:/data/ml-100k")
    return {
        "candidate": cand.summary(),
        "champion": {**champ.summary(), "version": 3},
        "overlap": cat.overlap(cand, champ).to_dict(),
    }


def check(decision, name: str):
    [found] = [c for c in decision.checks if c.name == name]
    return found


def test_digest_names_the_item_set_not_its_order() -> None:
    a = cat.from_ids(["1", "2", "3"])
    assert a.digest == cat.from_ids(["3", "1", "2"]).digest
    assert a.digest != cat.from_ids(["1", "2", "4"]).digest
    assert a.digest != cat.from_ids(["12", "3"]).digest  # no separator ambiguity
    assert a.tags() == {"catalogue.digest": a.digest, "catalogue.size": "3",
                        "catalogue.source": "unknown"}  # fmt: skip


def test_overlap_is_a_share_of_the_champions_catalogue() -> None:
    o = cat.overlap(cat.from_ids([str(i) for i in range(250)]),
                    cat.from_ids([str(i) for i in range(1682)]))  # fmt: skip
    assert (o.shared, o.candidate_size, o.champion_size) == (250, 250, 1682)
    assert o.share_of_champion == pytest.approx(250 / 1682)
    grown = cat.overlap(cat.from_ids(list("abcdef")), cat.from_ids(list("abc")))
    assert grown.share_of_champion == 1.0  # new items are fine: the champion's are all known


def test_a_different_catalogue_is_declined_with_the_reason() -> None:
    catalogue = record([str(i) for i in range(250)], [str(i) for i in range(1682)])
    # The candidate would pass the champion rule trivially (the NDCG 0.0166 champion).
    decision = decide(GOOD, POPULARITY, {"ndcg@10": 0.0166}, CFG, K, catalogue=catalogue)
    assert not decision.passed
    c = check(decision, "catalogue")
    assert not c.passed and c.value == pytest.approx(250 / 1682) and c.threshold == 0.9
    assert c.message in decision.reasons
    for part in ("catalogue changed", "250 items", "1682", "14.9% of the champion's catalogue",
                 "movielens-100k", "csv:/data/new.csv", "allow_catalogue_change=true"):  # fmt: skip
        assert part in c.message, (part, c.message)


def test_allow_catalogue_change_passes_and_says_so() -> None:
    catalogue = record([str(i) for i in range(250)], [str(i) for i in range(1682)])
    cfg = dataclasses.replace(CFG, allow_catalogue_change=True)
    decision = decide(GOOD, POPULARITY, {"ndcg@10": 0.0166}, cfg, K, catalogue=catalogue)
    assert decision.passed
    c = check(decision, "catalogue")
    assert c.passed and "allowed by the trigger (allow_catalogue_change)" in c.message
    assert c.message in decision.reasons


def test_same_catalogue_passes_and_a_small_change_within_the_minimum_too() -> None:
    same = [str(i) for i in range(100)]
    ok = decide(GOOD, POPULARITY, {"ndcg@10": 0.19}, CFG, K, catalogue=record(same, same))
    assert ok.passed and "catalogues comparable" in check(ok, "catalogue").message
    ninety = record(same[:90] + ["new1"], same)  # 90 of the champion's 100 items
    assert decide(GOOD, POPULARITY, {"ndcg@10": 0.19}, CFG, K, catalogue=ninety).passed
    eighty_nine = record(same[:89], same)
    assert not decide(GOOD, POPULARITY, {"ndcg@10": 0.19}, CFG, K, catalogue=eighty_nine).passed
    lenient = dataclasses.replace(CFG, catalogue_min_overlap=0.5)
    assert decide(GOOD, POPULARITY, {"ndcg@10": 0.19}, lenient, K, catalogue=eighty_nine).passed


def test_champion_rule_uses_the_candidate_on_the_shared_items() -> None:
    catalogue = record(["a", "b", "c"], ["a", "b", "c", "d"])
    cfg = dataclasses.replace(CFG, allow_catalogue_change=True)
    champion = {"ndcg@10": 0.30}
    # On all its items the candidate looks worse; on the shared items it is better.
    on_shared = {"ndcg@10": 0.31, "hr@10": 0.5}
    decision = decide(GOOD, POPULARITY, champion, cfg, K, catalogue=catalogue,
                      candidate_on_shared=on_shared)  # fmt: skip
    c = check(decision, "champion")
    assert c.passed and c.value == 0.31
    assert not decide(GOOD, POPULARITY, champion, cfg, K, catalogue=catalogue).passed
    # the paired bootstrap gets the same users' values
    per_user = decide(GOOD, POPULARITY, champion, cfg, K, catalogue=catalogue,
                      candidate_on_shared=on_shared, candidate_per_user=np.full(50, 0.31),
                      champion_per_user=np.full(50, 0.30))  # fmt: skip
    assert check(per_user, "champion").interval is not None and per_user.passed


def test_no_champion_means_no_catalogue_check() -> None:
    decision = decide(GOOD, POPULARITY, None, CFG, K, catalogue={"candidate": {"size": 3}})
    assert decision.passed and [c.name for c in decision.checks if c.name == "catalogue"] == []


def test_settings_come_from_the_trigger_form() -> None:
    from recflow.config import PipelineConfig
    from recflow.settings_views import form_schemas

    cfg = from_params({"allow_catalogue_change": "true", "catalogue_min_overlap": 0.5})
    assert cfg.gate.allow_catalogue_change is True and cfg.gate.catalogue_min_overlap == 0.5
    assert from_params({}).gate.catalogue_min_overlap == 0.9
    assert from_params({}).gate.allow_catalogue_change is False
    with pytest.raises(ConfigError, match="catalogue_min_overlap"):
        from_params({"catalogue_min_overlap": 1.5})
    spec = form_schemas(PipelineConfig())
    assert spec["catalogue_min_overlap"][0] == 0.9 and spec["allow_catalogue_change"][0] is False
