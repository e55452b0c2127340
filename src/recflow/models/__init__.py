"""Models: the deep ranking network, the popularity baseline, export in the serving contract.

The names below are imported on first use (PEP 562), so importing this package, or its light
``zoo`` module for the list of model kinds, stays cheap at Airflow DAG-parse time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recflow.models.contract_check import check_contract
    from recflow.models.export import export_model
    from recflow.models.scorer import load_recommender, load_scorer
    from recflow.models.training import TrainedModel, score_users, train_ranking_mlp

_WHERE = {
    "TrainedModel": "training",
    "check_contract": "contract_check",
    "export_model": "export",
    "load_recommender": "scorer",
    "load_scorer": "scorer",
    "score_users": "training",
    "train_ranking_mlp": "training",
}
__all__ = [
    "TrainedModel",
    "check_contract",
    "export_model",
    "load_recommender",
    "load_scorer",
    "score_users",
    "train_ranking_mlp",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'recflow.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"recflow.models.{_WHERE[name]}"), name)
