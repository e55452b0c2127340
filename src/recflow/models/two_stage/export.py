"""``two_stage``: retrieval by user/item towers, then the ranking MLP on the candidates only.

fit   trains the seed's ranking network exactly as ``ranking_mlp`` does (same settings, same
      seed, so the same weights) and the two towers (:mod:`recflow.models.two_tower`), then
      measures the retrieval stage's recall@N on the validation split: the share of validation
      users whose held-out item is among their N candidates (training items excluded, as
      served). The popularity retrieval's recall@N on the same users is measured beside it;
      both go to ``summary["metrics"]`` (MLflow ``train.*``) for the gate's retrieval check.
export one SavedModel in the serving contract. Per request: a [B, D] x [D, N_catalogue] matmul,
      training items masked, an exact top-k (:func:`top_k_blocked`) picks
      ``two_stage_candidates`` items, the MLP scores those B x C pairs, and the score module
      takes the top-K of them (``known_candidates``: nothing else touches [B, N]).

``score_all`` (offline evaluation) returns, for each known user, the MLP's probability (in
[0, 1]) for the candidates and ``tanh(retrieval score / 16) - 2`` (in (-3, -1)) for every other
item, so any ranking of the full catalogue puts the candidates first, in the MLP's order, then
the rest in retrieval order: exactly what serving returns. With N = the catalogue size the
model ranks like ``ranking_mlp`` (tests/unit/test_two_stage.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recflow.errors import ContractError
from recflow.types import Features, Split

KERAS_FILE = "model.keras"
TOWERS_FILE = "towers.npz"
SUMMARY_FILE = "two_stage.json"
NON_CANDIDATE_OFFSET = -2.0  # non-candidates: tanh(retrieval / 16) - 2, below every candidate
BLOCK = 16  # items per block in top_k_blocked (measured fastest of 8/16/32 at 50k items)


def recall_metrics(towers: Any, features: Features, split: Split, n: int) -> dict[str, float]:
    """Retrieval recall@n of the towers and of popularity on the validation split's users
    (empty when the split has no validation rows for training users, e.g. the MS protocol)."""
    from recflow.evaluation.ranking import _held_out
    from recflow.models.two_tower import popularity_candidates, recall_at_n, retrieve

    if split.validation is None or len(split.validation) == 0:
        return {}
    users, targets = _held_out(split.validation, features, "validation")
    if users.size == 0:
        return {}
    n_eff = min(n, features.n_items)
    return {
        f"retrieval_recall_at_{n_eff}": recall_at_n(
            retrieve(towers, features, users, n_eff), targets
        ),
        f"popularity_recall_at_{n_eff}": recall_at_n(
            popularity_candidates(features, users, n_eff), targets
        ),
        "retrieval_candidates": float(n_eff),
        "retrieval_validation_users": float(users.size),
    }


def fit(
    features: Features,
    split: Split,
    cfg: Any,
    progress: Callable[[str], None],
    train_dir: Path,
) -> dict[str, Any]:
    from recflow.models.training import train_ranking_mlp
    from recflow.models.two_tower import train_towers

    t0 = time.perf_counter()
    trained = train_ranking_mlp(features, cfg, progress=progress)
    towers = train_towers(
        features,
        dim=cfg.two_stage.tower_dim,
        epochs=cfg.two_stage.tower_epochs,
        batch_size=cfg.two_stage.tower_batch_size,
        learning_rate=cfg.two_stage.tower_learning_rate,
        temperature=cfg.two_stage.tower_temperature,
        seed=cfg.seed,
        progress=progress,
    )
    metrics = recall_metrics(towers, features, split, cfg.two_stage.candidates)
    for name, value in metrics.items():
        progress(f"two_stage: {name} = {value:.4f}")
    train_dir.mkdir(parents=True, exist_ok=True)
    trained.model.save(train_dir / KERAS_FILE)
    np.savez(
        train_dir / TOWERS_FILE,
        users=towers.users,
        items=towers.items,
        candidates=np.int64(cfg.two_stage.candidates),
    )
    history = {k: [float(x) for x in v] for k, v in trained.history.items()}
    history.update(towers.history)
    (train_dir / SUMMARY_FILE).write_text(json.dumps({"metrics": metrics, "history": history}))
    return {"history": history, "metrics": metrics, "seconds": time.perf_counter() - t0}


def candidate_scores(model: Any, user_idx: Any, candidates: Any) -> Any:
    """MLP probabilities [B, C] of users ``user_idx`` [B] for items ``candidates`` [B, C]."""
    import tensorflow as tf

    from recflow.models.ranking_mlp import HEAD, ITEM_TOWER, USER_TOWER

    users = model.get_layer(USER_TOWER)(tf.cast(user_idx, tf.int32))  # [B, F]
    b, c = tf.shape(candidates)[0], tf.shape(candidates)[1]
    items = model.get_layer(ITEM_TOWER)(tf.reshape(tf.cast(candidates, tf.int32), [-1]))
    pairs = tf.concat([tf.repeat(users, c, axis=0), items], axis=1)  # [B*C, 2F]
    return tf.reshape(model.get_layer(HEAD)(pairs), [b, c])


def top_k_blocked(scores: Any, k: int, block: int = BLOCK) -> Any:
    """Indices [B, k] of each row's k largest ``scores`` [B, N] (any order), exactly as
    ``tf.math.top_k`` would pick them, in about half its time on a large catalogue.

    Rows are cut into blocks of ``block`` items; any item of the row's top k lies in a block
    whose maximum is at least the k-th largest value, so the top k blocks by maximum hold the
    whole top k, and the final ``top_k`` runs over k x block values instead of N.
    """
    import tensorflow as tf

    n = int(scores.shape[1])
    if n < 4 * k * block:  # small catalogue: blocks save nothing
        return tf.math.top_k(scores, k=k, sorted=False).indices
    pad = (-n) % block
    padded = tf.pad(scores, [[0, 0], [0, pad]], constant_values=float("-inf"))
    blocks = tf.reshape(padded, [tf.shape(scores)[0], -1, block])  # [B, M, block]
    best_blocks = tf.math.top_k(tf.reduce_max(blocks, axis=2), k=k, sorted=False).indices
    values = tf.reshape(tf.gather(blocks, best_blocks, batch_dims=1), [tf.shape(scores)[0], -1])
    within = tf.math.top_k(values, k=k, sorted=False).indices  # [B, k] into k x block
    return tf.gather(best_blocks, within // block, batch_dims=1) * block + within % block


def _retrieval(module: Any, idx: Any, n_candidates: int) -> tuple[Any, Any, Any]:
    """(retrieval scores [B, N], candidate indices [B, C], candidate is unseen [B, C])."""
    import tensorflow as tf

    safe = tf.maximum(idx, 0)
    # [B, D] x [D, N]: the brute-force pass over the catalogue. The item table is stored
    # transposed: ~35% less CPU per user than transpose_b on [N, D] (measured at 50k items).
    retrieval = tf.matmul(tf.gather(module.tower_users, safe), module.tower_items_t)
    rows, items = module.seen_positions(idx)
    masked = tf.tensor_scatter_nd_update(
        retrieval, tf.stack([rows, items], axis=1), tf.fill(tf.shape(items), float("-inf"))
    )
    candidates = top_k_blocked(masked, n_candidates)
    # A "candidate" with -inf retrieval is a training item (only when the user has fewer
    # unseen items than N).
    unseen = tf.math.is_finite(tf.gather(masked, candidates, batch_dims=1))
    return retrieval, candidates, unseen


def _known_candidates(model: Any, n_candidates: int) -> Any:
    """Serving: the MLP's scores of each known user's candidates (training items -inf)."""

    def known(module: Any, idx: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        _, candidates, unseen = _retrieval(module, idx, n_candidates)
        ranked = tf.cast(candidate_scores(model, tf.maximum(idx, 0), candidates), tf.float32)
        return candidates, tf.where(unseen, ranked, float("-inf"))

    return known


def _known_scores(model: Any, n_candidates: int) -> Any:
    """Offline ``score_all``: candidates by the MLP, the rest below them (module docstring)."""

    def known(module: Any, idx: Any) -> Any:
        import tensorflow as tf

        retrieval, candidates, unseen = _retrieval(module, idx, n_candidates)
        ranked = tf.cast(candidate_scores(model, tf.maximum(idx, 0), candidates), tf.float32)
        ranked = tf.where(unseen, ranked, NON_CANDIDATE_OFFSET - 1.0)  # serving masks them
        batch_rows = tf.repeat(tf.range(tf.shape(idx)[0]), n_candidates)
        where = tf.stack([batch_rows, tf.reshape(candidates, [-1])], axis=1)
        low = tf.tanh(retrieval / 16.0) + NON_CANDIDATE_OFFSET
        return tf.tensor_scatter_nd_update(low, where, tf.reshape(ranked, [-1]))

    return known


def export(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    import keras

    from recflow.models.score_module import save_score_module

    path = Path(train_dir) / TOWERS_FILE
    if not path.exists() or not (Path(train_dir) / KERAS_FILE).exists():
        raise ContractError(
            f"two_stage export: expected {path} and {KERAS_FILE} from the train stage, found "
            "none; run the train stage with model=two_stage first"
        )
    with np.load(path) as data:
        users, items = data["users"], data["items"]
        n_candidates = int(data["candidates"])
    if items.shape[0] != features.n_items or users.shape[0] != features.n_users:
        raise ContractError(
            f"two_stage export: expected towers for {features.n_users} users x "
            f"{features.n_items} items, found {users.shape[0]} x {items.shape[0]}; "
            "re-run the train stage on these features"
        )
    n_candidates = max(top_k, min(n_candidates, features.n_items))
    model = keras.models.load_model(Path(train_dir) / KERAS_FILE)
    return save_score_module(
        features,
        out_dir,
        top_k,
        warmup,
        _known_scores(model, n_candidates),
        {"tower_users": users, "tower_items_t": np.ascontiguousarray(items.T)},
        tracked=list(model.variables),
        known_candidates=_known_candidates(model, n_candidates),
    )
