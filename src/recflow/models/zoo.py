"""Every model the pipeline can train, behind one interface (the trigger form's `model` param).

A model kind provides two functions:
    fit(features, split, cfg, progress, train_dir) -> summary
        trains on ``features`` (training data only; ``split`` is there for models that need
        the chronological order of events) and saves whatever export needs under
        ``train_dir``; the summary is JSON-able and may hold ``history`` (per-epoch lists,
        e.g. ``{"loss": [...]}``).
    export(train_dir, features, out_dir, top_k, warmup_user_ids) -> out_dir
        writes a SavedModel meeting ``recflow.contract`` (loads with only tensorflow).
Both run in separate Airflow tasks, possibly separate processes: nothing passes in memory.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recflow.errors import ConfigError

if TYPE_CHECKING:
    from recflow.config import TrainConfig
    from recflow.types import Features, Split

Progress = Callable[[str], None]
FitFn = Callable[["Features", "Split", "TrainConfig", Progress, Path], dict[str, Any]]
ExportFn = Callable[[Path, "Features", Path, int, Sequence[str]], Path]


@dataclass(frozen=True)
class ModelKind:
    name: str
    description: str
    fit: FitFn
    export: ExportFn


# -- ranking_mlp ------------------------------------------------------------------------------
KERAS_FILE = "model.keras"
HISTORY_FILE = "history.json"


def _fit_ranking_mlp(
    features: Features, split: Split, cfg: TrainConfig, progress: Progress, train_dir: Path
) -> dict[str, Any]:
    from recflow.models.training import train_ranking_mlp

    trained = train_ranking_mlp(features, cfg, progress=progress)
    train_dir.mkdir(parents=True, exist_ok=True)
    trained.model.save(train_dir / KERAS_FILE)
    history = {k: [float(x) for x in v] for k, v in trained.history.items()}
    (train_dir / HISTORY_FILE).write_text(json.dumps(history))
    return {"history": history, "seconds": trained.seconds}


def _export_ranking_mlp(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    import keras

    from recflow.models.export import export_model
    from recflow.models.sparse_adam import register
    from recflow.models.training import TrainedModel

    register()  # the saved model was compiled with LazyAdam
    model = keras.models.load_model(train_dir / KERAS_FILE)
    trained = TrainedModel(model=model, history={}, seconds=0.0)
    return export_model(
        trained, features, out_dir, top_k=top_k, warmup_user_ids=warmup, model_kind="ranking_mlp"
    )


# -- popularity -------------------------------------------------------------------------------
def _fit_popularity(
    features: Features, split: Split, cfg: TrainConfig, progress: Progress, train_dir: Path
) -> dict[str, Any]:
    progress("popularity: counts of training events, nothing to fit")
    return {"history": {}, "seconds": 0.0}


def _export_popularity(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    from recflow.models.export import export_model

    return export_model(
        None, features, out_dir, top_k=top_k, warmup_user_ids=warmup, model_kind="popularity"
    )


_KINDS: dict[str, ModelKind] = {
    "ranking_mlp": ModelKind(
        "ranking_mlp",
        "deep ranking network: user/item embeddings + profile features -> Dense 64-32-1",
        _fit_ranking_mlp,
        _export_ranking_mlp,
    ),
    "popularity": ModelKind(
        "popularity", "most popular unseen items (baseline)", _fit_popularity, _export_popularity
    ),
}


# -- kinds in their own modules, imported on use (TensorFlow stays out of DAG parsing) --------
def _module_kind(name: str, module: str, description: str, *, pass_name: bool = False) -> ModelKind:
    """A kind whose ``fit``/``export`` live in ``recflow.models.<module>``.

    ``pass_name``: the module serves several kinds and takes the kind's name first in ``fit``.
    """

    def fit(
        features: Features, split: Split, cfg: TrainConfig, progress: Progress, train_dir: Path
    ) -> dict[str, Any]:
        impl = importlib.import_module(f"recflow.models.{module}")
        if pass_name:
            return dict(impl.fit(name, features, split, cfg, progress, train_dir))
        return dict(impl.fit(features, split, cfg, progress, train_dir))

    def export(
        train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
    ) -> Path:
        impl = importlib.import_module(f"recflow.models.{module}")
        return Path(impl.export(train_dir, features, out_dir, top_k, warmup))

    return ModelKind(name, description, fit, export)


for _kind in (
    _module_kind(
        "ease",
        "ease",
        "EASE: closed-form item-item model (Steck 2019), scores = x_u B; strength ease_lambda",
    ),
    _module_kind(
        "neumf",
        "neumf",
        "NeuMF (He et al. 2017): GMF + MLP branches fused, implicit feedback, sampled negatives",
    ),
    _module_kind(
        "sasrec",
        "sasrec",
        "SASRec (Kang & McAuley 2018): causal Transformer over each user's item sequence",
        pass_name=True,
    ),
    _module_kind(
        "sasrec_sqn",
        "sasrec",
        "SASRec + SQN Q-learning head (Xin et al. 2020); serves sqn_serve_head",
        pass_name=True,
    ),
    _module_kind(
        "multvae",
        "multvae",
        "Mult-VAE (Liang et al. 2018): variational autoencoder over each user's item row, "
        "multinomial likelihood, KL annealing; multvae_* settings",
    ),
    _module_kind(
        "blend",
        "blend",
        "blend of item EASE, user-side EASE and the Mult-VAE ensemble, each standardised per "
        "user and weighted (blend_* settings)",
    ),
    _module_kind(
        "two_stage",
        "two_stage",
        "two-stage: user/item towers retrieve two_stage_candidates items (dot product + top_k "
        "over the catalogue), the ranking MLP scores only those",
    ),
):
    _KINDS[_kind.name] = _kind


def get_kind(name: str) -> ModelKind:
    if name not in _KINDS:
        raise ConfigError(f"model: expected one of {sorted(_KINDS)}, found {name!r}")
    return _KINDS[name]


def kind_names() -> tuple[str, ...]:
    """Every model kind, in registration order: the only list of kinds (the form's choices)."""
    return tuple(_KINDS)
