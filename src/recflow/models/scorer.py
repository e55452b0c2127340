"""In-process access to an exported SavedModel: raw scores for evaluation, top-K answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow import contract
from recflow.errors import ContractError
from recflow.types import ScoreFn

if TYPE_CHECKING:
    import tensorflow as tf

# Users per score_all call: bounds the [B, N] (and hidden [B*N, 64]) tensors in the graph.
_PAIRS_PER_CALL = 262_144


def _load(path: Path) -> tf.Module:
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(path))
    except (OSError, ValueError) as exc:
        raise ContractError(
            f"expected a loadable SavedModel at {path}, found {type(exc).__name__}: {exc}"
        ) from exc


def _decode(values: np.ndarray) -> np.ndarray:
    return np.char.decode(values.astype(np.bytes_), "utf-8").astype(str)


def load_scorer(path: Path) -> ScoreFn:
    """A ``ScoreFn`` over the model's ``score_all``: user ids [B] -> (scores [B, N], catalogue)."""
    import tensorflow as tf

    model = _load(Path(path))
    for attr in (contract.SCORE_ALL_ATTR, contract.CATALOGUE_ATTR):
        if not hasattr(model, attr):
            raise ContractError(
                f"expected attribute {attr!r} on the SavedModel at {path}, found none; "
                "re-export it with recflow.models.export_model"
            )
    catalogue = _decode(tf.convert_to_tensor(getattr(model, contract.CATALOGUE_ATTR)).numpy())
    step = max(1, _PAIRS_PER_CALL // max(1, catalogue.size))

    def score(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Referencing the loaded object keeps its variables alive as long as this closure.
        score_all = getattr(model, contract.SCORE_ALL_ATTR)
        ids = [str(u) for u in np.asarray(user_ids).reshape(-1)]
        out = np.empty((len(ids), catalogue.size), dtype=np.float32)
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            out[start : start + len(chunk)] = score_all(tf.constant(chunk, tf.string)).numpy()
        return out, catalogue

    return score


def load_recommender(path: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Calls ``serving_default``: user ids [B] -> {item_ids, scores, titles} as numpy [B, K]."""
    import tensorflow as tf

    model = _load(Path(path))
    signatures = getattr(model, "signatures", {})
    if contract.SIGNATURE_NAME not in signatures:
        raise ContractError(
            f"expected signature {contract.SIGNATURE_NAME!r} in {path}, found {sorted(signatures)}"
        )

    def recommend(user_ids: np.ndarray) -> dict[str, np.ndarray]:
        # Looked up through the loaded object so that its variables stay alive.
        serve = model.signatures[contract.SIGNATURE_NAME]
        ids = tf.constant([str(u) for u in np.asarray(user_ids).reshape(-1)], tf.string)
        out = {name: t.numpy() for name, t in serve(**{contract.INPUT_USER_ID: ids}).items()}
        for name in (contract.OUTPUT_ITEM_IDS, contract.OUTPUT_TITLES):
            out[name] = _decode(out[name])
        return out

    return recommend
