"""Export the ranking network (or the popularity baseline) as a SavedModel meeting
``recflow.contract``, loadable with only TensorFlow: the network's variables inside the score
module every score model shares (:mod:`recflow.models.score_module`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recflow.errors import ContractError
from recflow.models.training import TrainedModel
from recflow.types import Features

RANKING_MLP = "ranking_mlp"
POPULARITY = "popularity"


def _known_scores(model: Any, n_items: int) -> Any:
    """The ranking network's scores for known users, or popularity for the baseline."""

    def known(module: Any, idx: Any) -> Any:
        import tensorflow as tf

        from recflow.models.ranking_mlp import score_matrix

        if model is None:
            return tf.broadcast_to(module.popularity[None, :], [tf.shape(idx)[0], n_items])
        return score_matrix(model, tf.maximum(idx, 0), n_items)

    return known


def export_model(
    model: TrainedModel | None,
    features: Features,
    out_dir: Path,
    *,
    top_k: int,
    warmup_user_ids: Sequence[str],
    model_kind: str = RANKING_MLP,
) -> Path:
    """Write a SavedModel meeting ``recflow.contract`` into ``out_dir`` (atomically).

    ``model`` None or ``model_kind="popularity"`` exports the popularity baseline. Warmup
    requests use ``warmup_user_ids`` (first few known users if empty), a few ids per request.
    """
    from recflow.models.score_module import save_score_module

    if model_kind not in (RANKING_MLP, POPULARITY):
        raise ContractError(
            f"export: expected model_kind in {(RANKING_MLP, POPULARITY)}, found {model_kind!r}"
        )
    keras_model = None if model is None or model_kind == POPULARITY else model.model
    return save_score_module(
        features,
        out_dir,
        top_k,
        warmup_user_ids,
        _known_scores(keras_model, features.n_items),
        {},
        tracked=list(keras_model.variables) if keras_model is not None else [],
    )
