"""Models: the deep ranking network, the popularity baseline, export in the serving contract.

Submodules import TensorFlow/Keras only inside functions, so importing this package is cheap
(it may happen at Airflow DAG-parse time).
"""

from __future__ import annotations

from recflow.models.contract_check import check_contract
from recflow.models.export import export_model
from recflow.models.scorer import load_recommender, load_scorer
from recflow.models.training import TrainedModel, score_users, train_ranking_mlp

__all__ = [
    "TrainedModel",
    "check_contract",
    "export_model",
    "load_recommender",
    "load_scorer",
    "score_users",
    "train_ranking_mlp",
]
