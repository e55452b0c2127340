"""The run report's plots and its long-tail figures (see :mod:`recflow.pipeline.reporting`).

Each plot returns the file it wrote, or None when there is nothing to draw. The names of the
evaluation's parts (``WHO``, ``STAGES``, :func:`metric_names`) live here and the summary imports
them. matplotlib (Agg), numpy and TensorFlow are imported inside functions: the report's module
must stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from recflow.pipeline.context import RunContext

WHO = ("candidate", "popularity", "champion")
STAGES = ("validation", "test")
DECILES = 10
MAX_LONG_TAIL_USERS = 5000  # enough for a stable share; bounds the time on big data sets
_COLORS = {"candidate": "#1f77b4", "popularity": "#7f7f7f", "champion": "#ff7f0e"}


def metric_names(evaluation: Mapping[str, Any]) -> list[str]:
    """Metric keys of the candidate's validation metrics, ranking metrics first."""
    names = list((evaluation.get("candidate") or {}).get("validation", {}))
    return [n for n in names if "@" in n] + [n for n in names if "@" not in n]


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _save(plt: ModuleType, fig: Any, out: Path) -> Path:
    """Lay out, write and close ``fig`` (closing frees it: a worker draws many reports)."""
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_loss_curves(history: Mapping[str, Sequence[float]], out: Path) -> Path | None:
    series = {name: list(values) for name, values in history.items() if len(values) > 0}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, out)


def plot_metric_comparison(evaluation: Mapping[str, Any], out: Path) -> Path | None:
    names = [n for n in metric_names(evaluation) if "@" in n]
    present = [w for w in WHO if evaluation.get(w)]
    if not names or not present:
        return None
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(STAGES), figsize=(11, 4), sharey=True)
    width = 0.8 / len(present)
    x = np.arange(len(names))
    for ax, stage in zip(axes, STAGES, strict=True):
        for i, who in enumerate(present):
            metrics = evaluation[who].get(stage) or {}
            values = [float(metrics.get(n, np.nan)) for n in names]
            label = who
            if who == "champion" and evaluation.get("champion_version") is not None:
                label = f"champion v{evaluation['champion_version']}"
            ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label, color=_COLORS[who])
        ax.set_xticks(x)
        ax.set_xticklabels(names)
        ax.set_title(f"{stage} (full ranking)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Candidate vs popularity vs champion")
    return _save(plt, fig, out)


def plot_slices(slices: Mapping[str, Any], metric: str, out: Path) -> Path | None:
    """Bars of ``metric`` per slice; ``slices`` maps who -> slice -> metrics (evaluate's form)."""
    rows: dict[str, dict[str, float]] = {}
    for who, per_slice in slices.items():
        if not isinstance(per_slice, Mapping):
            continue
        for name, metrics in per_slice.items():
            if isinstance(metrics, Mapping) and metric in metrics:
                rows.setdefault(str(name), {})[str(who)] = float(metrics[metric])
    if not rows:
        return None
    import numpy as np

    plt = _pyplot()
    whos = sorted({w for r in rows.values() for w in r}, key=lambda w: (w not in WHO, w))
    names = sorted(rows)
    height = 0.8 / len(whos)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.45 * len(names) * max(1, len(whos) / 2)))
    for i, who in enumerate(whos):
        values = [rows[n].get(who, np.nan) for n in names]
        ax.barh(
            y + i * height - 0.4 + height / 2, values, height, label=who, color=_COLORS.get(who)
        )
    labels = []
    for n in names:
        users = next(
            (
                slices[w][n].get("users")
                for w in whos
                if isinstance(slices.get(w), Mapping) and n in slices[w]
            ),
            None,
        )
        labels.append(f"{n} ({int(users)} users)" if users is not None else n)
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.set_xlabel(f"validation {metric}")
    ax.set_title(f"{metric} per slice")
    ax.grid(axis="x", alpha=0.3)
    ax.legend()
    return _save(plt, fig, out)


def popularity_deciles(train_item_idx: npt.ArrayLike, n_items: int) -> np.ndarray:
    """Decile of every catalogue item by training popularity: 0 = the most popular 10%.

    Ties are broken by item index so that the deciles have equal sizes (items without any
    training event all land in the last deciles).
    """
    import numpy as np

    counts = np.bincount(np.asarray(train_item_idx, dtype=np.int64), minlength=n_items)
    order = np.lexsort((np.arange(n_items), -counts))  # most popular first
    deciles = np.empty(n_items, dtype=np.int64)
    deciles[order] = (np.arange(n_items) * DECILES) // max(n_items, 1)
    return deciles


def long_tail_shares(
    recommended: npt.ArrayLike,
    item_index: Mapping[str, int],
    deciles: np.ndarray,
    train_item_idx: npt.ArrayLike,
) -> dict[str, list[float]]:
    """Share of recommendations and of training interactions in each popularity decile."""
    import numpy as np

    idx = [item_index[str(i)] for i in np.asarray(recommended).ravel() if str(i) in item_index]
    rec = np.bincount(deciles[np.asarray(idx, dtype=np.int64)], minlength=DECILES)
    inter = np.bincount(deciles[np.asarray(train_item_idx, dtype=np.int64)], minlength=DECILES)
    return {
        "recommended": (rec / max(rec.sum(), 1)).round(4).tolist(),
        "interactions": (inter / max(inter.sum(), 1)).round(4).tolist(),
    }


def plot_long_tail(shares: Mapping[str, Sequence[float]], k: int, out: Path) -> Path:
    import numpy as np

    plt = _pyplot()
    x = np.arange(1, DECILES + 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, shares["recommended"], 0.4, label=f"candidate's top-{k}", color="#1f77b4")
    ax.bar(x + 0.2, shares["interactions"], 0.4, label="training interactions", color="#bbbbbb")
    ax.axhline(
        1 / DECILES,
        color="black",
        linestyle="--",
        linewidth=1,
        label="each decile's share of the catalogue",
    )
    ax.set_xticks(x)
    ax.set_xlabel("item popularity decile (1 = most popular 10% of items)")
    ax.set_ylabel("share")
    ax.set_title("Long tail: where recommendations come from")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(plt, fig, out)


def compute_long_tail(ctx: RunContext, k: int) -> dict[str, list[float]] | None:
    """Decile shares of the exported model's top-k for the validation users (None if absent)."""
    if not (ctx.saved_model_dir / "saved_model.pb").exists() or not ctx.features_dir.exists():
        return None
    import numpy as np

    from recflow.features import load_features
    from recflow.models import load_recommender

    features = load_features(ctx.features_dir)
    users = np.asarray(features.user_ids).astype(str)
    try:
        from recflow.features import load_split
        from recflow.schema import USER_ID

        split = load_split(ctx.split_dir)
        evaluated = split.validation[USER_ID].astype(str).unique()
        users = np.asarray(sorted(set(evaluated) & set(users.tolist())), dtype=object)
    except Exception:  # noqa: BLE001  (no split: every known user still says something)
        pass
    users = users[:MAX_LONG_TAIL_USERS]
    if users.size == 0:
        return None
    recommend = load_recommender(ctx.saved_model_dir)
    top = np.concatenate(
        [recommend(users[i : i + 256])["item_ids"][:, :k] for i in range(0, users.size, 256)]
    )
    item_index = {str(item): j for j, item in enumerate(features.item_ids)}
    deciles = popularity_deciles(features.train_item_idx, features.n_items)
    return long_tail_shares(top, item_index, deciles, features.train_item_idx)
