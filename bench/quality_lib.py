"""Shared pieces of the quality benchmark: the protocol file, data, splits, configs, scoring."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SMOKE_ENV = "RECFLOW_QUALITY_SMOKE"
PROTOCOL_FILE = Path(__file__).with_name("PROTOCOL.md")
K = 10
NDCG = f"ndcg@{K}"
# Per-model training settings fixed by the protocol (the zoo's config defaults otherwise).
MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    "neumf": {"epochs": 12, "embedding_dim": 32, "batch_size": 1024, "learning_rate": 0.002},
    "ranking_mlp": {"epochs": 10, "batch_size": 1024},
    "ranking_mlp+dp": {
        "epochs": 10,
        "batch_size": 1024,
        "dp_enabled": True,
        "dp_noise_multiplier": 1.1,
        "dp_l2_clip": 1.0,
    },
}
ZOO_ROWS = ("neumf", "ranking_mlp", "ranking_mlp+dp")
FAMILY_ROWS = ("ease", "user_ease", "multvae", "blend", "popularity")
SEQUENTIAL_ROWS = ("sasrec", "sasrec_sqn")


def protocol_hash(path: Path = PROTOCOL_FILE) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def protocol_spec(path: Path = PROTOCOL_FILE) -> dict[str, Any]:
    """The JSON block at the end of PROTOCOL.md (grid, seeds, rows)."""
    blocks = re.findall(r"```json\n(.*?)```", path.read_text(), flags=re.S)
    if len(blocks) != 1:
        raise SystemExit(f"{path}: expected one ```json block, found {len(blocks)}")
    spec: dict[str, Any] = json.loads(blocks[0])
    if os.environ.get(SMOKE_ENV):
        # A quick pass of the code paths on tiny data (never for results: --final refuses it).
        spec.update(vae_epochs=[2, 4], sasrec_epochs=[1, 2], evaluation_seeds=[1, 2, 3],
                    seeds_other=2, bootstrap=50)  # fmt: skip
        for row in MODEL_OVERRIDES.values():
            row["epochs"] = 1
    return spec


def load_dataset(data: Path) -> Any:
    """MovieLens-100K (u.data) or MovieLens-1M (ratings.dat, '::', latin-1) by folder layout."""
    from recflow.data.movielens import read_movielens_folder

    return read_movielens_folder(data)


def base_config(row: str, seed: int, **settings: Any) -> Any:
    """A TrainConfig from flat DAG-param names (``sasrec_epochs=3``), checked like a run's."""
    from recflow.config import train_config

    base = row.split("+")[0]
    model = "blend" if base in FAMILY_ROWS else base
    return train_config(model=model, seed=seed, **{**MODEL_OVERRIDES.get(row, {}), **settings})


def vae_config(cfg: Any, vae: dict[str, Any]) -> Any:
    from recflow.config import train_config

    return train_config(
        cfg,
        multvae_beta_max=float(vae["cap"]),
        multvae_members=int(vae["members"]),
        multvae_epochs=int(vae["epochs"]),
    )


@dataclass
class Fold:
    """Features and split of the training part a model is fitted on, and how it is scored."""

    features: Any
    split: Any
    score: Callable[[Any], dict[str, Any]]  # ScoreFn -> {"ndcg@10": mean, ...}

    def ndcg(self, score_fn: Any) -> float:
        return float(self.score(score_fn)[NDCG])


def ms_fold(train: Any, test: Any, items: Any) -> Fold:
    from recflow.evaluation.protocols import evaluate_ms
    from recflow.features import build_features
    from recflow.types import Split

    f = build_features(train, items)
    split = Split(train=train, validation=train.iloc[:0], test=test)

    def score(score_fn: Any) -> dict[str, Any]:
        return evaluate_ms(score_fn, test, f, k=K)[0]

    return Fold(f, split, score)


def ms_inner_folds(ds: Any, spec: dict[str, Any]) -> list[Fold]:
    from recflow.evaluation.protocols import ms_stratified_split

    train, _ = ms_stratified_split(ds.interactions)
    folds = []
    for seed in spec["ms_inner"]["seeds"]:
        inner_train, inner_val = ms_stratified_split(
            train, ratio=spec["ms_inner"]["ratio"], seed=seed
        )
        folds.append(ms_fold(inner_train, inner_val, ds.items))
    return folds


def loo_fold(ds: Any) -> Fold:
    """The LOO training part, scored on the validation events (the inner fold)."""
    from recflow.evaluation.ranking import rank_users
    from recflow.features import build_features, split_leave_last_out

    split = split_leave_last_out(ds.interactions)
    f = build_features(split.train, ds.items)

    def score(score_fn: Any) -> dict[str, Any]:
        ranked = rank_users(score_fn, split, f, k=K, stage="validation")
        return ranked.metrics(f.n_items)

    return Fold(f, split, score)


def zoo_scorer(row: str, fold: Fold, cfg: Any, tmp: Path) -> tuple[Any, dict[str, Any]]:
    """Fit a zoo kind on the fold, export it, and load the SavedModel's scorer."""
    import time

    from recflow.models import load_scorer
    from recflow.models.zoo import get_kind

    kind = get_kind(row.split("+")[0])
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fitted = kind.fit(fold.features, fold.split, cfg, lambda line: None, tmp / "train")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    saved = kind.export(tmp / "train", fold.features, tmp / "model", 20, [])
    info: dict[str, Any] = {"train_seconds": round(wall, 2), "cpu_per_wall": round(cpu / wall, 2)}
    eps = fitted.get("history", {}).get("dp_epsilon")
    if eps:
        info["dp_epsilon"] = float(eps[-1])
    return load_scorer(saved), info


def zoo_inner_ndcg(row: str, folds: list[Fold], cfg: Any) -> float:
    scores = []
    for fold in folds:
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
            scorer, _ = zoo_scorer(row, fold, cfg, Path(tmp))
            scores.append(fold.ndcg(scorer))
    return float(np.mean(scores))


def popularity_table(features: Any) -> np.ndarray:
    counts = np.bincount(features.train_item_idx, minlength=features.n_items).astype(np.float32)
    return np.tile(counts, (features.n_users, 1))


def weight_grid(step: float) -> list[tuple[float, float, float]]:
    """(item, user, vae) weights on the simplex in steps of ``step``."""
    n = round(1 / step)
    return [
        (round(i / n, 4), round(j / n, 4), round((n - i - j) / n, 4))
        for i in range(n + 1)
        for j in range(n + 1 - i)
    ]


def point_name(weights: tuple[float, float, float]) -> str:
    parts = [name for name, w in zip(("ease", "user_ease", "multvae"), weights, strict=True) if w]
    return parts[0] if len(parts) == 1 else "blend"


def use_all_cores() -> None:
    import os

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
