"""The zoo's ``fit`` and ``export`` of ``popularity``: nothing to fit; the export scores every
known user by the items' training popularity (unknown users get it anyway), and the score
module masks each user's training items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recflow.models.score_module import KnownScores

if TYPE_CHECKING:
    import tensorflow as tf

    from recflow.config import TrainConfig
    from recflow.types import Features, Split


def popularity_scores(n_items: int) -> KnownScores:
    """Known users' scores [B, N]: the module's popularity vector for every user."""

    def known(module: tf.Module, idx: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        return tf.broadcast_to(module.popularity[None, :], [tf.shape(idx)[0], n_items])

    return known


def fit(
    features: Features,
    split: Split,
    cfg: TrainConfig,
    progress: Callable[[str], None],
    train_dir: Path,
) -> dict[str, Any]:
    progress("popularity: counts of training events, nothing to fit")
    return {"history": {}, "seconds": 0.0}


def export(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    from recflow.models.ranking_mlp.export import POPULARITY, export_model

    return export_model(
        None, features, out_dir, top_k=top_k, warmup_user_ids=warmup, model_kind=POPULARITY
    )
