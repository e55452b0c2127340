"""Offline evaluation: ranking metrics, full-catalogue evaluation, baseline scorers."""

from recflow.evaluation.baselines import popularity_scorer, random_scorer
from recflow.evaluation.metrics import per_user_ndcg, ranking_metrics
from recflow.evaluation.ranking import evaluate_scorer

__all__ = [
    "evaluate_scorer",
    "per_user_ndcg",
    "popularity_scorer",
    "random_scorer",
    "ranking_metrics",
]
