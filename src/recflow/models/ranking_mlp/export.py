"""Export the ranking network (or the popularity baseline) as a SavedModel meeting
``recflow.contract``, loadable with only TensorFlow: the network's variables inside the score
module every score model shares (:mod:`recflow.models.score_module`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.errors import ContractError
from recflow.models.ranking_mlp.training import TrainedModel
from recflow.models.score_module import KnownScores
from recflow.types import Features

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

RANKING_MLP = "ranking_mlp"
POPULARITY = "popularity"


def _known_scores(model: keras.Model, n_items: int) -> KnownScores:
    """The ranking network's scores [B, N] for known users (index ``idx`` [B], -1 unknown)."""

    def known(module: tf.Module, idx: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        from recflow.models.ranking_mlp.network import score_matrix

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
    from recflow.models.popularity.kind import popularity_scores
    from recflow.models.score_module import save_score_module

    if model_kind not in (RANKING_MLP, POPULARITY):
        raise ContractError(
            f"export: expected model_kind in {(RANKING_MLP, POPULARITY)}, found {model_kind!r}"
        )
    if model is None or model_kind == POPULARITY:
        known, tracked = popularity_scores(features.n_items), []
    else:
        known, tracked = _known_scores(model.model, features.n_items), list(model.model.variables)
    return save_score_module(features, out_dir, top_k, warmup_user_ids, known, {}, tracked=tracked)
