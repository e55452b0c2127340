"""The zoo's ``fit`` and ``export`` of ``sasrec`` (supervised head) and ``sasrec_sqn`` (+ the
SQN Q head), and what passes between them through the train folder: the weights, the
architecture, the serving head and each user's recent items (ids, not indices)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recflow.config import TrainConfig
from recflow.errors import ConfigError, TrainingError
from recflow.models.sasrec.network import HEADS, SasrecParams, build_network
from recflow.models.sasrec.sequences import last_windows
from recflow.models.sasrec.training import TrainedSasrec, train_sasrec
from recflow.types import Features, Split

if TYPE_CHECKING:
    from recflow.models.sasrec.network import SasrecNet

SASREC = "sasrec"
SASREC_SQN = "sasrec_sqn"
META_FILE = "sasrec.json"
WEIGHTS_FILE = "sasrec.weights.h5"
HISTORIES_FILE = "histories.npz"
HISTORY_FILE = "history.json"


def save_trained(trained: TrainedSasrec, features: Features, head: str, train_dir: Path) -> None:
    """Weights, architecture, serving head and each user's recent items (ids, not indices)."""
    train_dir.mkdir(parents=True, exist_ok=True)
    trained.model.save_weights(train_dir / WEIGHTS_FILE)
    meta = {"params": asdict(trained.params), "head": head}
    (train_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    recent = last_windows(trained.sequences, trained.params.max_len)
    ids = np.concatenate([[""], features.item_ids.astype(str)])[recent]
    np.savez(train_dir / HISTORIES_FILE, user_ids=features.user_ids.astype(str), items=ids)
    (train_dir / HISTORY_FILE).write_text(json.dumps(trained.history))


def load_trained(train_dir: Path, features: Features) -> tuple[SasrecNet, str, np.ndarray]:
    """(network, serving head, [U, L] recent items of ``features``' users as index + 1)."""
    missing = [
        f for f in (META_FILE, WEIGHTS_FILE, HISTORIES_FILE) if not (train_dir / f).is_file()
    ]
    if missing:
        raise TrainingError(
            f"sasrec export: expected {missing} in {train_dir}, found none; run the train stage"
        )
    meta = json.loads((train_dir / META_FILE).read_text())
    p = SasrecParams(**meta["params"])
    if p.n_items != features.n_items:
        raise TrainingError(
            f"sasrec export: expected a catalogue of {p.n_items} items as trained, found "
            f"{features.n_items}; export with the features the model was trained on"
        )
    model = build_network(p)
    model.load_weights(train_dir / WEIGHTS_FILE)
    with np.load(train_dir / HISTORIES_FILE, allow_pickle=False) as npz:
        user_ids, items = npz["user_ids"], npz["items"]
    # Map stored ids onto this catalogue / user order ("" -> 0 = padding).
    item_pos = pd.Index(features.item_ids.astype(str)).get_indexer(items.reshape(-1)) + 1
    recent_by_stored = item_pos.reshape(items.shape).astype(np.int32)
    rows = pd.Index(user_ids).get_indexer(features.user_ids.astype(str))
    recent = np.zeros((features.n_users, p.max_len), np.int32)
    recent[rows >= 0] = recent_by_stored[rows[rows >= 0]]
    return model, str(meta["head"]), recent


def fit(
    kind: str,
    features: Features,
    split: Split,
    cfg: TrainConfig,
    progress: Callable[[str], None],
    train_dir: Path,
) -> dict[str, Any]:
    """Zoo ``fit`` of ``sasrec`` (supervised head) and ``sasrec_sqn`` (+ Q head, SQN)."""
    if kind not in (SASREC, SASREC_SQN):
        raise ConfigError(f"model: expected {SASREC!r} or {SASREC_SQN!r}, found {kind!r}")
    head = cfg.sqn.serve_head if kind == SASREC_SQN else "supervised"
    if head not in HEADS:
        raise ConfigError(f"sqn_serve_head: expected one of {HEADS}, found {head!r}")
    trained = train_sasrec(
        features, split, cfg, q_head=kind == SASREC_SQN, head=head, progress=progress
    )
    save_trained(trained, features, head, Path(train_dir))
    ratio = trained.cpu_seconds / trained.seconds if trained.seconds > 0 else 0.0
    progress(
        f"{kind}: trained in {trained.seconds:.1f} s wall, {trained.cpu_seconds:.1f} s CPU "
        f"(ratio {ratio:.2f}); serving head {head!r}"
    )
    notes = []
    if trained.epochs_trained < cfg.sasrec.epochs or trained.best_epoch < trained.epochs_trained:
        notes.append(
            f"{kind}: early stopping trained {trained.epochs_trained} of {cfg.sasrec.epochs} "
            f"epochs and kept epoch {trained.best_epoch}'s weights (best validation NDCG@10)"
        )
    return {
        "history": trained.history,
        "seconds": trained.seconds,
        "cpu_seconds": trained.cpu_seconds,
        "serve_head": head,
        "metrics": {"epochs_trained": trained.epochs_trained, "best_epoch": trained.best_epoch},
        "notes": notes,
    }


def export(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    """Zoo ``export``: rebuild the network, load its weights, write the SavedModel."""
    from recflow.models.sasrec.export import export_sequential

    model, head, recent = load_trained(Path(train_dir), features)
    return export_sequential(
        model, features, recent, out_dir, head=head, top_k=top_k, warmup_user_ids=warmup
    )
