"""Read the Open Bandit Dataset (``<root>/<behavior_policy>/<campaign>/<campaign>.csv``).

Conventions follow the Open Bandit Pipeline's ``OpenBanditDataset`` so estimates are
comparable with its published figures: rounds sorted by timestamp, positions 1..3 mapped to
0..2, context = one-hot of the four hashed user features with the first level of each dropped
(20 columns in campaign ``all``), action context = label-encoded categorical item features plus
the numeric ``item_feature_0``. ``include_affinity=True`` appends the user-item affinity
columns to the context (better for learning policies; OBP's default leaves them out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recflow.bandits.feedback import LoggedFeedback
from recflow.errors import DataSourceError

BEHAVIOR_POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
REQUIRED_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")


def campaign_file(root: Path, behavior_policy: str, campaign: str) -> Path:
    if behavior_policy not in BEHAVIOR_POLICIES:
        raise DataSourceError(
            f"OBD: expected behavior_policy in {BEHAVIOR_POLICIES}, found {behavior_policy!r}"
        )
    if campaign not in CAMPAIGNS:
        raise DataSourceError(f"OBD: expected campaign in {CAMPAIGNS}, found {campaign!r}")
    return Path(root) / behavior_policy / campaign / f"{campaign}.csv"


def load_obd(
    root: Path, behavior_policy: str, campaign: str, *, include_affinity: bool = False
) -> LoggedFeedback:
    """Logged feedback of one behaviour policy and campaign; raises DataSourceError if unreadable."""
    import pandas as pd

    path = campaign_file(root, behavior_policy, campaign)
    items_path = path.parent / "item_context.csv"
    for p in (path, items_path):
        if not p.is_file():
            raise DataSourceError(
                f"OBD: expected {p}, found no such file; pass the folder that holds "
                "random/ and bts/ (e.g. /work/shared/datasets/open-bandit-small)"
            )
    try:
        data = pd.read_csv(path, index_col=0)
        items = pd.read_csv(items_path, index_col=0)
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"OBD: cannot parse {path} or {items_path}: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in data.columns]
    if missing or "item_id" not in items.columns:
        raise DataSourceError(
            f"OBD {path}: expected columns {list(REQUIRED_COLUMNS)} (and item_id in "
            f"item_context.csv), missing {missing or ['item_id']}"
        )
    # Stable sort: equal timestamps keep file order, so the round order is reproducible.
    data = data.sort_values("timestamp", kind="stable")
    positions = data["position"].to_numpy()
    levels = np.unique(positions)
    # OBD numbers positions 1..L; dense ranks make them 0-based whatever the numbering.
    position = np.searchsorted(levels, positions).astype(np.int64)

    item_ids = np.sort(items["item_id"].to_numpy())
    action = data["item_id"].to_numpy()
    unknown = np.setdiff1d(np.unique(action), item_ids)
    if unknown.size:
        raise DataSourceError(
            f"OBD {path}: expected every item_id in item_context.csv, found unknown ids "
            f"{unknown[:10].tolist()}"
        )
    action_index = np.searchsorted(item_ids, action).astype(np.int64)

    user_cols = [c for c in data.columns if c.startswith("user_feature")]
    context = pd.get_dummies(data[user_cols], drop_first=True).to_numpy(dtype=np.float64)
    if include_affinity:
        affinity = [c for c in data.columns if c.startswith("user-item_affinity")]
        context = np.hstack([context, data[affinity].to_numpy(dtype=np.float64)])

    items = items.set_index("item_id").loc[item_ids]
    categorical = [c for c in items.columns if c != "item_feature_0"]
    encoded = [np.unique(items[c].astype(str), return_inverse=True)[1] for c in categorical]
    numeric = (
        items[["item_feature_0"]].to_numpy(dtype=np.float64) if "item_feature_0" in items else None
    )
    parts = [np.column_stack(encoded).astype(np.float64)] if encoded else []
    if numeric is not None:
        parts.append(numeric)
    action_context = np.hstack(parts) if parts else None

    feedback = LoggedFeedback(
        context=context,
        action=action_index,
        position=position,
        reward=data["click"].to_numpy(dtype=np.float64),
        pscore=data["propensity_score"].to_numpy(dtype=np.float64),
        action_ids=tuple(str(i) for i in item_ids),
        len_list=int(levels.size),
        action_context=action_context,
        # OBD has no request id; the slots of one impression share its timestamp.
        request=pd.factorize(data["timestamp"].astype(str))[0].astype(np.int64),
    )
    feedback.check_shapes()
    return feedback
