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
Each kind's folder ``recflow.models.<kind>/`` holds its network, training and export; its
``kind`` module defines ``fit`` and ``export`` (``sasrec_sqn`` shares ``sasrec``'s folder).
"""

from __future__ import annotations

import importlib
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


def _folder_kind(name: str, description: str, *, folder: str | None = None) -> ModelKind:
    """A kind whose ``fit`` and ``export`` live in ``recflow.models.<folder>.kind``, imported on
    first use (TensorFlow stays out of DAG parsing). ``folder`` defaults to the kind's name;
    a folder that serves several kinds (``sasrec``) takes the kind's name first in ``fit``.
    """
    module = f"recflow.models.{folder or name}.kind"
    shared = folder is not None

    def fit(
        features: Features, split: Split, cfg: TrainConfig, progress: Progress, train_dir: Path
    ) -> dict[str, Any]:
        impl = importlib.import_module(module)
        if shared:
            return dict(impl.fit(name, features, split, cfg, progress, train_dir))
        return dict(impl.fit(features, split, cfg, progress, train_dir))

    def export(
        train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
    ) -> Path:
        impl = importlib.import_module(module)
        return Path(impl.export(train_dir, features, out_dir, top_k, warmup))

    return ModelKind(name, description, fit, export)


_KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        _folder_kind(
            "ranking_mlp",
            "deep ranking network: user/item embeddings + profile features -> Dense 64-32-1",
        ),
        _folder_kind("popularity", "most popular unseen items (baseline)"),
        _folder_kind(
            "ease",
            "EASE: closed-form item-item model (Steck 2019), scores = x_u B; strength ease_lambda",
        ),
        _folder_kind(
            "neumf",
            "NeuMF (He et al. 2017): GMF + MLP branches fused, implicit feedback, sampled "
            "negatives",
        ),
        _folder_kind(
            "sasrec",
            "SASRec (Kang & McAuley 2018): causal Transformer over each user's item sequence",
            folder="sasrec",
        ),
        _folder_kind(
            "sasrec_sqn",
            "SASRec + SQN Q-learning head (Xin et al. 2020); serves sqn_serve_head",
            folder="sasrec",
        ),
        _folder_kind(
            "multvae",
            "Mult-VAE (Liang et al. 2018): variational autoencoder over each user's item row, "
            "multinomial likelihood, KL annealing; multvae_* settings",
        ),
        _folder_kind(
            "blend",
            "blend of item EASE, user-side EASE and the Mult-VAE ensemble, each standardised per "
            "user and weighted (blend_* settings)",
        ),
        _folder_kind(
            "two_stage",
            "two-stage: user/item towers retrieve two_stage_candidates items (dot product + "
            "top_k over the catalogue), the ranking MLP scores only those",
        ),
    )
}


def get_kind(name: str) -> ModelKind:
    if name not in _KINDS:
        raise ConfigError(f"model: expected one of {sorted(_KINDS)}, found {name!r}")
    return _KINDS[name]


def kind_names() -> tuple[str, ...]:
    """Every model kind, in registration order: the only list of kinds (the form's choices)."""
    return tuple(_KINDS)
