"""The serving-log format, version 1: what a policy showed, with which probability, and what came of it.

A log is a set of UTF-8 JSON-lines files. The model server (or its client) appends one
``impression`` record per served request; whoever observes the outcome appends ``reward``
records later, joined to impressions by ``request_id`` and ``position``. Every record carries
``"schema": "recflow.bandit_log"`` and ``"version": 1``; a reader refuses versions it does not
know, and later versions only add optional fields.

impression::

    {"schema": "recflow.bandit_log", "version": 1, "type": "impression",
     "request_id": "r-0001",            # unique per served request
     "timestamp": 1732740000.25,        # unix seconds (float) when served
     "policy_name": "neural-dr",        # registered model name
     "policy_version": "3",             # model version that chose the slate
     "epsilon": 0.1,                    # exploration rate sent with the request
     "context": [0.0, 1.0, ...],        # the context vector exactly as sent to the model
     "slate": [{"position": 0, "action_id": "14", "propensity": 0.0125,
                "reward": null}, ...]}  # reward optional: known at serving time only rarely

reward::

    {"schema": "recflow.bandit_log", "version": 1, "type": "reward",
     "request_id": "r-0001", "timestamp": 1732740031.0,
     "position": 0, "action_id": "14", "reward": 1.0}

``propensity`` is the serving policy's probability of showing that action at that position
(the ``action_probs`` output of the SavedModel at the shown action for position 0; for later
positions of a slate drawn without replacement, the exact marginal computed by
``recflow.bandits.slates.slate_marginals``, as ``recflow.bandits.client.PolicyClient`` logs it).
Positions are 0-based. Full description: docs/serving_log.md.
When several reward records hit the same slot, the latest timestamp wins; a slot with no
reward is NaN (a validation failure) unless the reader is told a default (e.g. 0 for clicks
never seen within the attribution window).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, Unpack

import numpy as np

from recflow.bandits.feedback import LoggedFeedback
from recflow.errors import DataError, DataSourceError
from recflow.jsontypes import JSONObject

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = "recflow.bandit_log"
VERSION = 1
IMPRESSION = "impression"
REWARD = "reward"
FRAME_COLUMNS = (
    "request_id",
    "timestamp",
    "policy_name",
    "policy_version",
    "epsilon",
    "position",
    "action_id",
    "pscore",
    "reward",
    "context",
    "context_ok",
)


class ImpressionFields(TypedDict):
    """The keyword arguments of :func:`impression_record`."""

    request_id: str
    context: Sequence[float]
    action_ids: Sequence[str]
    propensities: Sequence[float]
    policy_name: str
    policy_version: str
    epsilon: float
    timestamp: NotRequired[float | None]
    rewards: NotRequired[Sequence[float | None] | None]


class RewardFields(TypedDict):
    """The keyword arguments of :func:`reward_record`."""

    request_id: str
    position: int
    action_id: str
    reward: float
    timestamp: NotRequired[float | None]


class _Slot(TypedDict):
    """One row of :func:`read_log`'s frame (``FRAME_COLUMNS``)."""

    request_id: str
    timestamp: float
    policy_name: str
    policy_version: str
    epsilon: float
    position: int
    action_id: str
    pscore: float
    reward: float
    context: list[float]
    context_ok: bool


def impression_record(
    *,
    request_id: str,
    context: Sequence[float],
    action_ids: Sequence[str],
    propensities: Sequence[float],
    policy_name: str,
    policy_version: str,
    epsilon: float,
    timestamp: float | None = None,
    rewards: Sequence[float | None] | None = None,
) -> JSONObject:
    """An impression record; ``action_ids[k]`` was shown at position k."""
    if len(action_ids) != len(propensities):
        raise ValueError(
            f"impression: expected one propensity per shown action, found "
            f"{len(action_ids)} actions and {len(propensities)} propensities"
        )
    slate = []
    for k, (a, p) in enumerate(zip(action_ids, propensities, strict=True)):
        slot: JSONObject = {"position": k, "action_id": str(a), "propensity": float(p)}
        if rewards is not None and rewards[k] is not None:
            slot["reward"] = float(rewards[k])  # type: ignore[arg-type]
        slate.append(slot)
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "type": IMPRESSION,
        "request_id": str(request_id),
        "timestamp": float(time.time() if timestamp is None else timestamp),
        "policy_name": str(policy_name),
        "policy_version": str(policy_version),
        "epsilon": float(epsilon),
        "context": [float(x) for x in context],
        "slate": slate,
    }


def reward_record(
    *, request_id: str, position: int, action_id: str, reward: float, timestamp: float | None = None
) -> JSONObject:
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "type": REWARD,
        "request_id": str(request_id),
        "timestamp": float(time.time() if timestamp is None else timestamp),
        "position": int(position),
        "action_id": str(action_id),
        "reward": float(reward),
    }


class BanditLogWriter:
    """Append records to one JSON-lines file; safe to share between threads of one process.

    Each record is one ``write`` of a complete line followed by a flush, so a reader never
    sees half a record except after a crash mid-line (the reader reports that line).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: JSONObject) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()

    def log_impression(self, **kwargs: Unpack[ImpressionFields]) -> JSONObject:
        record = impression_record(**kwargs)
        self.write(record)
        return record

    def log_reward(self, **kwargs: Unpack[RewardFields]) -> JSONObject:
        record = reward_record(**kwargs)
        self.write(record)
        return record


def iter_records(paths: Iterable[Path]) -> Iterable[tuple[str, int, dict[str, Any]]]:
    """(file, line number, record) for every non-empty line; bad lines raise DataSourceError."""
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataSourceError(f"serving log: expected a file at {path}, found nothing")
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataSourceError(
                        f"serving log {path}:{number}: expected one JSON object per line, "
                        f"found invalid JSON ({exc.msg}); truncate or repair the line"
                    ) from None
                if not isinstance(record, dict) or record.get("schema") != SCHEMA:
                    raise DataSourceError(
                        f"serving log {path}:{number}: expected a record with schema "
                        f"{SCHEMA!r}, found {str(record)[:120]}"
                    )
                if record.get("version") != VERSION:
                    raise DataSourceError(
                        f"serving log {path}:{number}: expected version {VERSION}, found "
                        f"{record.get('version')!r}; upgrade recflow to read newer logs"
                    )
                yield str(path), number, record


def read_log(paths: Iterable[Path], *, missing_reward: float | None = None) -> pd.DataFrame:
    """One row per shown slot (columns ``FRAME_COLUMNS``), rewards joined from reward records."""
    import pandas as pd

    slots: dict[tuple[str, int], _Slot] = {}
    rewards: dict[tuple[str, int], tuple[float, float]] = {}
    for path, number, rec in iter_records(paths):
        try:
            if rec["type"] == IMPRESSION:
                for slot in rec["slate"]:
                    key = (str(rec["request_id"]), int(slot["position"]))
                    context = [float(x) for x in rec["context"]]
                    slots[key] = {
                        "request_id": key[0],
                        "timestamp": float(rec["timestamp"]),
                        "policy_name": str(rec["policy_name"]),
                        "policy_version": str(rec["policy_version"]),
                        "epsilon": float(rec["epsilon"]),
                        "position": key[1],
                        "action_id": str(slot["action_id"]),
                        "pscore": _number(slot.get("propensity")),
                        "reward": _number(slot.get("reward")),
                        "context": context,
                        "context_ok": bool(context) and all(math.isfinite(x) for x in context),
                    }
            elif rec["type"] == REWARD:
                key = (str(rec["request_id"]), int(rec["position"]))
                ts = float(rec["timestamp"])
                if key not in rewards or ts >= rewards[key][0]:
                    rewards[key] = (ts, float(rec["reward"]))
            else:
                raise KeyError("type")
        except (KeyError, TypeError, ValueError) as exc:
            raise DataSourceError(
                f"serving log {path}:{number}: expected a v{VERSION} {rec.get('type')!r} record "
                f"with all required fields, found a problem with {exc}; see "
                "recflow.bandits.logformat for the format"
            ) from None
    for key, (_, value) in rewards.items():
        if key in slots:
            slots[key]["reward"] = value
    rows = sorted(slots.values(), key=lambda r: (r["timestamp"], r["request_id"], r["position"]))
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    if missing_reward is not None:
        frame["reward"] = frame["reward"].fillna(float(missing_reward))
    return frame


def to_feedback(frame: pd.DataFrame, catalogue: Sequence[str], len_list: int) -> LoggedFeedback:
    """Arrays for the estimators; validate the frame first (unknown actions raise DataError)."""
    index = {str(a): i for i, a in enumerate(catalogue)}
    unknown = sorted({a for a in frame["action_id"] if a not in index})
    if unknown:
        raise DataError(
            f"serving log: expected actions from the catalogue of {len(index)}, found unknown "
            f"{unknown[:10]}; run recflow.bandits.validate.validate_frame first"
        )
    dims = {len(c) for c in frame["context"]}
    if len(dims) > 1:
        raise DataError(
            f"serving log: expected one context length, found {sorted(dims)}; "
            "logs of different feature versions must be read separately"
        )
    context = np.asarray(list(frame["context"]), dtype=np.float64).reshape(len(frame), -1)
    feedback = LoggedFeedback(
        context=context,
        action=np.asarray([index[a] for a in frame["action_id"]], dtype=np.int64),
        position=frame["position"].to_numpy(dtype=np.int64),
        reward=frame["reward"].to_numpy(dtype=np.float64),
        pscore=frame["pscore"].to_numpy(dtype=np.float64),
        action_ids=tuple(str(a) for a in catalogue),
        len_list=int(len_list),
        policy_version=tuple(frame["policy_version"].astype(str)),
        # Codes of the request id: the slots of one request must stay on one side of a split.
        request=np.unique(frame["request_id"].astype(str).to_numpy(), return_inverse=True)[1]
        .reshape(-1)
        .astype(np.int64),
    )
    feedback.check_shapes()
    return feedback


def _number(value: object) -> float:
    if value is None:
        return math.nan
    if isinstance(value, int | float | str):
        return float(value)
    raise TypeError(f"expected a number, found {value!r}")
