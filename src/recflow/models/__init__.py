"""Models: every kind the pipeline trains, and the serving contract around their exports.

One folder per kind (``ranking_mlp``, ``popularity``, ``ease``, ``neumf``, ``sasrec`` with
``sasrec_sqn``, ``multvae``, ``blend``, ``two_stage``) holds its network, training and export,
and a ``kind`` module with the zoo's ``fit`` and ``export``. Modules at this level are shared:
``zoo`` (the list of kinds), ``score_module`` (the contract around any scorer), ``scorer``
(loading an export in-process), ``contract_check`` (checking an export in a fresh process),
``explain`` (the ``reasons`` output), ``sparse_adam`` and ``pointwise`` (training pieces
several kinds use).

The names below are imported on first use (PEP 562), so importing this package, or its light
``zoo`` module for the list of model kinds, stays cheap at Airflow DAG-parse time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recflow.models.contract_check import check_contract
    from recflow.models.ranking_mlp.export import export_model
    from recflow.models.ranking_mlp.training import TrainedModel, score_users, train_ranking_mlp
    from recflow.models.scorer import load_recommender, load_scorer

_WHERE = {
    "TrainedModel": "ranking_mlp.training",
    "check_contract": "contract_check",
    "export_model": "ranking_mlp.export",
    "load_recommender": "scorer",
    "load_scorer": "scorer",
    "score_users": "ranking_mlp.training",
    "train_ranking_mlp": "ranking_mlp.training",
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
