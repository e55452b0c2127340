"""The zoo's ``fit`` and ``export`` of ``ease``: B goes through the train folder (``ease_B.npy``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recflow.errors import ContractError
from recflow.models.ease.closed_form import fit_ease
from recflow.models.ease.export import export_ease
from recflow.types import Features

if TYPE_CHECKING:
    from recflow.config import TrainConfig
    from recflow.types import Split


B_FILE = "ease_B.npy"


def fit(
    features: Features,
    split: Split,
    cfg: TrainConfig,
    progress: Callable[[str], None],
    train_dir: Path,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    b = fit_ease(features, float(cfg.ease.l2))
    seconds = time.perf_counter() - t0
    train_dir.mkdir(parents=True, exist_ok=True)
    np.save(train_dir / B_FILE, b)
    progress(f"ease: lambda={cfg.ease.l2:g}, B {b.shape[0]}x{b.shape[1]} in {seconds:.1f} s")
    return {"history": {}, "seconds": seconds}


def export(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    path = Path(train_dir) / B_FILE
    if not path.exists():
        raise ContractError(f"EASE export: expected {path} from the train stage, found none")
    return export_ease(np.load(path), features, out_dir, top_k, warmup)
