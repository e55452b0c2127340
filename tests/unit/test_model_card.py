"""The model card states data, training, metrics overall and per slice, gate and limits."""

from __future__ import annotations

import pytest

from recflow.config import PipelineConfig
from recflow.model_card import KNOWN_LIMITS, build_card

pytestmark = pytest.mark.unit


def test_card_sections_and_numbers() -> None:
    records = {
        "ingest": {
            "source": "synthetic",
            "digest": "ab" * 32,
            "rows": 900,
            "users": 30,
            "items": 20,
            "catalogue": 25,
        },
        "drift": {
            "status": "passed",
            "against": "champion v1",
            "checks": [{"name": "item_popularity_jsd", "value": 0.01, "limit": 0.3}],
        },
        "train": {"seconds": 3.2, "final_loss": 0.41},
        "evaluation": {
            "k": 10,
            "candidate": {"validation": {"ndcg@10": 0.12, "hr@10": 0.3}, "test": {"ndcg@10": 0.11}},
            "popularity": {"validation": {"ndcg@10": 0.08, "hr@10": 0.2}},
            "champion": None,
            "slices": {"candidate": {"activity:cold": {"ndcg@10": 0.05}}},
        },
        "gate": {"passed": True, "reasons": ["ndcg@10 0.1200 >= floor 0.02"]},
    }
    card = build_card(PipelineConfig(), version=3, run_id="manual__x", records=records)
    assert card.startswith("# Model card: recflow-recommender version 3")
    for text in (
        "## Data",
        "900 interactions",
        "## Training",
        "epochs 5",
        "| candidate (validation) | 0.3000 | 0.1200 |",
        "### Per slice",
        "| activity:cold |",
        "## Gate",
        "ndcg@10 0.1200 >= floor",
        "item_popularity_jsd: 0.0100 (limit 0.3)",
        "## Known limits",
        KNOWN_LIMITS[0],
    ):
        assert text in card, text


def test_card_without_records_still_renders() -> None:
    card = build_card(PipelineConfig(), version=None, run_id="r", records={})
    assert "(none recorded)" in card and "declined" in card


def test_card_shows_training_notes() -> None:
    note = "blend: dropped a part (blend_user_weight -> 0): too many users"
    card = build_card(
        PipelineConfig(), version=1, run_id="r", records={"train": {"seconds": 1, "notes": [note]}}
    )
    assert f"- Note: {note}" in card
