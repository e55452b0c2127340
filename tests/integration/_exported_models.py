"""SavedModels written by the pipeline's own export code, for infra validation and rollback.

``export_popularity`` goes through ``recflow.models.export_model`` (no training: seconds).
``export_noisy`` meets the same signature but adds fresh random noise to its scores on every
call (think dropout left on at inference): served answers never equal offline ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recflow.types import Features

N_USERS, N_ITEMS, K = 12, 16, 5


def small_features(shift: int = 0) -> Features:
    """Deterministic features; ``shift`` changes the popularity so versions differ."""
    rng = np.random.default_rng(shift)
    users, items = [], []
    for u in range(N_USERS):
        picks = rng.choice(N_ITEMS, 4, replace=False)
        users += [u] * 4
        items += picks.tolist()
    tu, ti = np.array(users, np.int32), np.array(items, np.int32)
    popularity = np.log1p(np.bincount(ti, minlength=N_ITEMS)).astype(np.float32)
    popularity = (popularity + np.linspace(0, 0.01, N_ITEMS, dtype=np.float32)) / (
        popularity.max() + 0.01
    )
    return Features(
        user_ids=np.array([f"user-{i}" for i in range(N_USERS)]),
        item_ids=np.array([f"item-{i}" for i in range(N_ITEMS)]),
        item_titles=np.array([f"Title {i}" for i in range(N_ITEMS)]),
        genres=("g0",),
        train_user_idx=tu,
        train_item_idx=ti,
        user_genre_pref=np.ones((N_USERS, 1), np.float32),
        user_activity=np.ones(N_USERS, np.float32),
        item_popularity=popularity,
        item_genres=np.ones((N_ITEMS, 1), np.float32),
    )


def export_popularity(out_dir: Path, shift: int = 0) -> Path:
    from recflow.models import export_model

    features = small_features(shift)
    warmup = [str(u) for u in features.user_ids[:6]]
    return export_model(None, features, out_dir, top_k=K, warmup_user_ids=warmup,
                        model_kind="popularity")  # fmt: skip


def export_noisy(out_dir: Path) -> Path:
    import tensorflow as tf

    from recflow.models.score_module import write_warmup

    features = small_features()

    class Noisy(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.items = tf.constant([str(i) for i in features.item_ids])
            self.titles = tf.constant([str(t) for t in features.item_titles])
            self.popularity = tf.constant(features.item_popularity)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
            batch = tf.shape(user_id)[0]
            scores = self.popularity[None, :] + tf.random.uniform([batch, N_ITEMS], 0, 1.0)
            top = tf.math.top_k(scores, k=K)
            return {
                "item_ids": tf.gather(self.items, top.indices),
                "scores": top.values,
                "titles": tf.gather(self.titles, top.indices),
            }

    module = Noisy()
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve})
    write_warmup(out_dir, [str(u) for u in features.user_ids[:6]])
    return out_dir


def truncate_variables(saved_model_dir: Path) -> Path:
    """Cut the variables data file in half, as an interrupted copy would."""
    [data] = sorted((saved_model_dir / "variables").glob("variables.data-*"))
    blob = data.read_bytes()
    data.write_bytes(blob[: len(blob) // 2])
    return saved_model_dir
