"""Evaluation-gate and drift settings: what a candidate must beat, how far data may move.

Declared once here (see recflow.settings); ``recflow.config`` re-exports every name, and its
``PipelineConfig`` holds these blocks as ``gate`` and ``drift``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from recflow.settings import Settings, entry, setting

GateRule = Literal["non-inferiority", "superiority"]

GATE_RULES: tuple[str, ...] = ("non-inferiority", "superiority")
GATE_METRICS: tuple[str, ...] = ("ndcg", "hr", "mrr")

GATE = "Evaluation and gate"
DRIFT = "Drift and skew"


@dataclass(frozen=True)
class GateConfig(Settings):
    """The evaluation gate (recflow.gate): floors, lift over popularity, champion rule."""

    FORM_SECTION: ClassVar[str] = GATE

    metric: str = setting(
        "ndcg",
        "Gate metric",
        "Metric compared with popularity and the champion.",
        choices=GATE_METRICS,
        flat="gate_metric",
    )
    # absolute floors on validation metrics; a metric missing here is not floored
    floors: Mapping[str, float] = setting(
        title="Metric floors",
        help="Absolute floors on validation metrics; a metric missing here is not floored.",
        factory=lambda: {"ndcg": 0.02, "hr": 0.05},
        param=False,
        entries={
            "ndcg": entry(
                "NDCG@K floor", "Absolute minimum validation NDCG@K.", ge=0, le=1, flat="floor_ndcg"
            ),
            "hr": entry(
                "HR@K floor", "Absolute minimum validation HR@K.", ge=0, le=1, flat="floor_hr"
            ),
        },
    )
    min_lift_over_popularity: float = setting(
        0.1,
        "Lift over popularity",
        "The candidate must beat popularity by this relative margin (0.1 = 10%).",
        ge=0,
    )
    rule: str = setting(
        "non-inferiority",
        "Champion rule",
        "non-inferiority: no worse than the champion minus the tolerance (lets a model retrained on fresher data replace an equal one); superiority: strictly better by the minimum improvement.",
        choices=GATE_RULES,
        flat="gate_rule",
    )
    tolerance: float = setting(
        0.005,
        "Non-inferiority tolerance",
        "Absolute amount the gate metric may fall below the champion's.",
        ge=0,
        le=1,
    )
    min_improvement: float = setting(
        0.0,
        "Superiority margin",
        "Absolute improvement over the champion required by the superiority rule.",
        ge=0,
        le=1,
    )
    slice_floors: Mapping[str, float] = setting(
        title="Slice floors",
        help='Slice name -> floor on the gate metric for that slice, e.g. {"activity:cold": 0.02, "popularity:tail": 0.01, "genre:Drama": 0.03}. Slices: activity:cold|medium|heavy (terciles of training events), popularity:head|tail (top 20% items), genre:<name>.',
        factory=dict,
    )
    bootstrap_samples: int = setting(
        1000,
        "Bootstrap resamples",
        "Resamples of users for the paired bootstrap interval of candidate - champion NDCG.",
        ge=100,
        le=100000,
    )
    confidence: float = setting(
        0.95,
        "Bootstrap confidence",
        "Confidence level of the paired interval the champion rule is decided on (0.95 = 95%).",
        gt=0.5,
        lt=1,
    )
    # The champion comparison needs comparable catalogues (recflow.catalogue).
    catalogue_min_overlap: float = setting(
        0.9,
        "Catalogue overlap minimum",
        "The candidate must know at least this share of the champion's items (by id) for the champion comparison to mean something (0.9 = 90%); below it the gate declines.",
        ge=0,
        le=1,
    )
    allow_catalogue_change: bool = setting(
        False,
        "Allow a catalogue change",
        "Replace a champion that knows other items (a new data source or catalogue): the gate compares the two on the shared items only and records that the change was allowed.",
    )
    # 0.25: the ranking stage's HR@K can never exceed recall@N, so below it 3 in 4 held-out
    # items are lost before ranking. Measured (N=200): MovieLens-100K towers 0.77 (popularity
    # 0.51); 50k-item generated log 0.44 (popularity 0.39, the generator's p(item|user) 0.48).
    min_retrieval_recall: float = setting(
        0.25,
        "Two-stage: retrieval recall floor",
        "model=two_stage: the retrieval stage's validation recall@N must reach this and the recall@N of the N most popular unseen items.",
        ge=0,
        le=1,
    )
    bootstrap_seed: int = setting(
        0, "Bootstrap seed", "Seed of the paired bootstrap.", ge=0, param=False
    )


@dataclass(frozen=True)
class DriftConfig(Settings):
    """Limits of the drift and skew checks (recflow.drift) against the champion's training data.

    Jensen-Shannon divergences use log base 2, so they lie in [0, 1]; L-infinity is the largest
    absolute difference of two categorical distributions' probabilities (as TFDV uses).
    Measured on synthetic data (300 users x 200 items): a different generator seed gives an item
    popularity JSD of 0.16-0.18; a batch of only the 10 top items gives 0.85."""

    FORM_SECTION: ClassVar[str] = DRIFT
    FLAT_PREFIX: ClassVar[str] = "drift_"

    max_item_popularity_jsd: float = setting(
        0.3,
        "Item popularity drift limit (JSD)",
        "Largest Jensen-Shannon divergence (log2, 0..1) between the batch's item popularity and the champion's training data.",
        ge=0,
        le=1,
    )
    max_user_activity_jsd: float = setting(
        0.15,
        "User activity drift limit (JSD)",
        "Largest JSD between the events-per-user histograms of the batch and the champion's training data.",
        ge=0,
        le=1,
    )
    max_rating_linf: float = setting(
        0.15,
        "Rating drift limit (L-inf)",
        "Largest change of any rating value's share (L-infinity distance).",
        ge=0,
        le=1,
    )
    max_unseen_users: float = setting(
        0.5,
        "Unseen users limit",
        "Largest share of the batch's users the champion was not trained on.",
        ge=0,
        le=1,
    )
    max_unseen_items: float = setting(
        0.2,
        "Unseen items limit",
        "Largest share of the batch's items the champion was not trained on.",
        ge=0,
        le=1,
    )
    max_serving_unknown_users: float = setting(
        0.5,
        "Serving skew: unknown users limit",
        "Largest share of served requests (serving logs) for users the champion was not trained on.",
        ge=0,
        le=1,
        flat="skew_max_unknown_users",
    )
    max_serving_user_jsd: float = setting(
        0.5,
        "Serving skew: requested users limit (JSD)",
        "Largest JSD between users requested in serving logs and the champion's training users.",
        ge=0,
        le=1,
        flat="skew_max_user_jsd",
    )
    accept_drift: bool = setting(
        False,
        "Accept drift (release quarantine)",
        "Report the drift checks but do not stop the run: re-run a quarantined batch with this on to train on it.",
        flat="accept_drift",
    )
    serving_log_dir: str = setting(
        "",
        "Serving logs folder",
        "JSON-lines request logs for the skew checks. Empty: <work folder>/serving/requests.",
        flat="serving_log_dir",
        null_default=True,
    )
