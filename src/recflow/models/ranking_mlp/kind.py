"""The zoo's ``fit`` and ``export`` of ``ranking_mlp``: the Keras model and its per-epoch
history go through the train folder (``model.keras``, ``history.json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recflow.config import TrainConfig
    from recflow.models.ranking_mlp.training import TrainedModel
    from recflow.types import Features, Split

KERAS_FILE = "model.keras"
HISTORY_FILE = "history.json"


def fit(
    features: Features,
    split: Split,
    cfg: TrainConfig,
    progress: Callable[[str], None],
    train_dir: Path,
) -> dict[str, Any]:
    from recflow.models.ranking_mlp.training import train_ranking_mlp

    trained = train_ranking_mlp(features, cfg, progress=progress)
    return {"history": save_trained(trained, train_dir), "seconds": trained.seconds}


def save_trained(trained: TrainedModel, train_dir: Path) -> dict[str, list[float]]:
    """The network (``model.keras``) and its per-epoch history (``history.json``, returned)
    into ``train_dir``; also the ranking half of ``two_stage``."""
    train_dir.mkdir(parents=True, exist_ok=True)
    trained.model.save(train_dir / KERAS_FILE)
    history = {k: [float(x) for x in v] for k, v in trained.history.items()}
    (train_dir / HISTORY_FILE).write_text(json.dumps(history))
    return history


def export(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    from recflow.models.ranking_mlp.export import RANKING_MLP, export_model
    from recflow.models.ranking_mlp.training import TrainedModel, load_trained_model

    model = load_trained_model(train_dir / KERAS_FILE)
    return export_model(
        TrainedModel(model=model, history={}, seconds=0.0),
        features,
        out_dir,
        top_k=top_k,
        warmup_user_ids=warmup,
        model_kind=RANKING_MLP,
    )
