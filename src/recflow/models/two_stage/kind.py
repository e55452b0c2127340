"""The zoo's ``fit`` and ``export`` of ``two_stage`` (see :mod:`recflow.models.two_stage`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recflow.errors import ContractError
from recflow.models.ranking_mlp.kind import KERAS_FILE, save_trained
from recflow.types import Features, Split

if TYPE_CHECKING:
    from recflow.config import TrainConfig
    from recflow.models.two_stage.towers import Towers

TOWERS_FILE = "towers.npz"
SUMMARY_FILE = "two_stage.json"


def recall_metrics(towers: Towers, features: Features, split: Split, n: int) -> dict[str, float]:
    """Retrieval recall@n of the towers and of popularity on the validation split's users
    (empty when the split has no validation rows for training users, e.g. the MS protocol)."""
    from recflow.evaluation.ranking import held_out_pairs
    from recflow.models.two_stage.towers import popularity_candidates, recall_at_n, retrieve

    if split.validation is None or len(split.validation) == 0:
        return {}
    users, targets = held_out_pairs(split.validation, features, "validation")
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
    cfg: TrainConfig,
    progress: Callable[[str], None],
    train_dir: Path,
) -> dict[str, Any]:
    from recflow.models.ranking_mlp.training import train_ranking_mlp
    from recflow.models.two_stage.towers import train_towers

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
        steps_per_execution=cfg.steps_per_execution,
        progress=progress,
        progress_seconds=cfg.progress_seconds,
    )
    metrics = recall_metrics(towers, features, split, cfg.two_stage.candidates)
    for name, value in metrics.items():
        progress(f"two_stage: {name} = {value:.4f}")
    history = save_trained(trained, train_dir)
    np.savez(
        train_dir / TOWERS_FILE,
        users=towers.users,
        items=towers.items,
        candidates=np.int64(cfg.two_stage.candidates),
    )
    history.update(towers.history)
    (train_dir / SUMMARY_FILE).write_text(json.dumps({"metrics": metrics, "history": history}))
    return {"history": history, "metrics": metrics, "seconds": time.perf_counter() - t0}


def export(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    from recflow.models.ranking_mlp.training import load_trained_model
    from recflow.models.two_stage.export import save_two_stage

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
    # Registers LazyAdam and RowEmbedding first: the export task is a fresh process.
    model = load_trained_model(Path(train_dir) / KERAS_FILE)
    return save_two_stage(model, users, items, n_candidates, features, out_dir, top_k, warmup)
