"""Drift and training/serving skew: compare a new batch with the champion's training data.

Reference statistics (``reference_stats(ds)``) summarise a dataset in a small JSON document:
item popularity counts, the user-activity histogram, the rating distribution and per-user event
counts (keyed by pseudonymous ids only: ingest pseudonymises before anything is written). The
pipeline logs them with every run as ``reference_stats.json``; the champion's copy is fetched
through its registered version's run.

Checks (``compare``), each against a configurable limit (``recflow.config.DriftConfig``):
    item_popularity_jsd   Jensen-Shannon divergence (log2, in [0, 1]) of item popularity
    user_activity_jsd     JSD of the events-per-user histogram (log2 buckets: 1, 2, 3-4, 5-8...)
    rating_linf           L-infinity distance of the rating distributions (TFDV's categorical
                          drift measure)
    unseen_users          share of the batch's distinct users the champion never saw
    unseen_items          share of the batch's distinct items the champion never saw
    serving_unknown_users share of served requests (serving logs) for users the champion was not
                          trained on: cold-start traffic the training data does not represent
    serving_user_jsd      JSD of requested users vs the training data's users (who is asking
                          vs who the model learned from)
The two serving checks run only when serving logs exist (``read_serving_log``).

Serving logs: JSON lines under ``<work_dir>/serving/requests/*.jsonl``, one object per requested
user id: ``{"time": <unix s>, "model": <name>, "user_id": <pseudonym>}``. The client library
writes them when given ``request_log``; a model server may write the same format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recflow.errors import DataError
from recflow.jsontypes import JSONObject

if TYPE_CHECKING:
    from recflow.config import DriftConfig
    from recflow.types import Dataset

STATS_VERSION = 1
REFERENCE_STATS_FILE = "reference_stats.json"
SERVING_LOG_SUBDIR = Path("serving") / "requests"


class DriftDetected(DataError):
    """A batch differs from the champion's training data beyond the configured limits."""

    def __init__(self, message: str, checks: list[JSONObject], quarantine: str | None) -> None:
        super().__init__(message)
        self.checks = checks
        self.quarantine = quarantine


@dataclass(frozen=True)
class Check:
    name: str
    measure: str  # "jsd", "linf" or "share"
    value: float
    limit: float
    passed: bool
    detail: str

    def to_dict(self) -> JSONObject:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Distances


def _normalise(counts: Mapping[str, float], keys: list[str]) -> list[float]:
    total = float(sum(counts.get(k, 0.0) for k in keys))
    if total <= 0:
        return [0.0] * len(keys)
    return [counts.get(k, 0.0) / total for k in keys]


def jensen_shannon(p_counts: Mapping[str, float], q_counts: Mapping[str, float]) -> float:
    """JSD (log base 2, in [0, 1]) of two count maps over the union of their keys.

    Two empty maps are identical (0); one empty map is maximally different (1).
    """
    keys = sorted(set(p_counts) | set(q_counts))
    p, q = _normalise(p_counts, keys), _normalise(q_counts, keys)
    if not any(p) and not any(q):
        return 0.0
    if not any(p) or not any(q):
        return 1.0

    def kl(a: list[float], m: list[float]) -> float:
        return sum(x * math.log2(x / y) for x, y in zip(a, m, strict=True) if x > 0)

    m = [(x + y) / 2 for x, y in zip(p, q, strict=True)]
    return max(0.0, min(1.0, 0.5 * kl(p, m) + 0.5 * kl(q, m)))


def l_infinity(p_counts: Mapping[str, float], q_counts: Mapping[str, float]) -> float:
    keys = sorted(set(p_counts) | set(q_counts))
    p, q = _normalise(p_counts, keys), _normalise(q_counts, keys)
    return max((abs(x - y) for x, y in zip(p, q, strict=True)), default=0.0)


def activity_bucket(events: int) -> str:
    """Log2 bucket label of a user's event count: "1", "2", "3-4", "5-8", "9-16", ..."""
    if events <= 2:
        return str(max(events, 1))
    hi = 1 << (events - 1).bit_length()
    return f"{hi // 2 + 1}-{hi}"


# ---------------------------------------------------------------------------------------------
# Reference statistics


def reference_stats(ds: Dataset, *, digest: str | None = None) -> JSONObject:
    """The JSON-able statistics drift is measured against (user ids must be pseudonyms)."""
    from recflow.schema import ITEM_ID, RATING, USER_ID

    inter = ds.interactions
    users = inter[USER_ID].dropna().astype(str)
    items = inter[ITEM_ID].dropna().astype(str)
    user_counts = users.value_counts()
    item_counts = items.value_counts()
    ratings = inter[RATING].dropna().astype(float).round(1)
    rating_counts = ratings.value_counts()
    activity: dict[str, int] = {}
    for n in user_counts.tolist():
        b = activity_bucket(int(n))
        activity[b] = activity.get(b, 0) + 1
    return {
        "stats_version": STATS_VERSION,
        "digest": digest,
        "rows": int(len(inter)),
        "n_users": int(len(user_counts)),
        "n_items": int(len(item_counts)),
        "catalogue": [str(i) for i in ds.items[ITEM_ID].dropna().astype(str).tolist()],
        "item_counts": {str(k): int(v) for k, v in item_counts.items()},
        "user_counts": {str(k): int(v) for k, v in user_counts.items()},
        "user_activity_hist": activity,
        "rating_counts": {f"{float(k):g}": int(v) for k, v in rating_counts.items()},
    }


def save_stats(stats: Mapping[str, object], path: Path) -> Path:
    from recflow.storage import atomic_write_text

    atomic_write_text(Path(path), json.dumps(stats, sort_keys=True))
    return Path(path)


def load_stats(path: Path) -> JSONObject:
    try:
        stats = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"reference statistics: expected a JSON file at {path}, could not read it ({exc}); "
            "retrain the champion to record them"
        ) from None
    if not isinstance(stats, dict) or stats.get("stats_version") != STATS_VERSION:
        raise DataError(
            f"reference statistics {path}: expected stats_version {STATS_VERSION}, found "
            f"{stats.get('stats_version') if isinstance(stats, dict) else type(stats).__name__}"
        )
    return stats


# ---------------------------------------------------------------------------------------------
# Serving logs


def serving_log_dir(work_dir: Path, configured: str = "") -> Path:
    return Path(configured) if configured else Path(work_dir) / SERVING_LOG_SUBDIR


def append_serving_log(folder: Path, model: str, user_ids: Iterable[str], now: float) -> None:
    """Append one line per requested (already pseudonymised) user id to today's log file."""
    import time as _time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    day = _time.strftime("%Y-%m-%d", _time.gmtime(now))
    lines = "".join(
        json.dumps({"time": round(now, 3), "model": model, "user_id": str(u)}) + "\n"
        for u in user_ids
    )
    # O_APPEND writes of one buffer: concurrent clients do not interleave within a line.
    with open(folder / f"requests-{day}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(lines)


def read_serving_log(folder: Path) -> dict[str, int] | None:
    """Requests per user id over every ``*.jsonl`` file in ``folder``; None if there are none."""
    folder = Path(folder)
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        return None
    counts: dict[str, int] = {}
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                uid = str(json.loads(line)["user_id"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a file being written; skip it
            counts[uid] = counts.get(uid, 0) + 1
    return counts or None


# ---------------------------------------------------------------------------------------------
# Comparison


def _share_unseen(batch: Iterable[str], reference: Iterable[str]) -> tuple[float, int, int]:
    new, ref = set(batch), set(reference)
    unseen = len(new - ref)
    return (unseen / len(new) if new else 0.0), unseen, len(new)


def compare(
    batch: Mapping[str, Any],
    reference: Mapping[str, Any],
    cfg: DriftConfig,
    serving_requests: Mapping[str, int] | None = None,
) -> list[Check]:
    """Every check of the module docstring, in a fixed order."""

    def check(name: str, measure: str, value: float, limit: float, detail: str) -> Check:
        return Check(name, measure, round(float(value), 6), float(limit), value <= limit, detail)

    out = [
        check(
            "item_popularity_jsd",
            "jsd",
            jensen_shannon(batch["item_counts"], reference["item_counts"]),
            cfg.max_item_popularity_jsd,
            f"item popularity over {len(set(batch['item_counts']) | set(reference['item_counts']))} items",
        ),
        check(
            "user_activity_jsd",
            "jsd",
            jensen_shannon(batch["user_activity_hist"], reference["user_activity_hist"]),
            cfg.max_user_activity_jsd,
            "events-per-user histogram (log2 buckets)",
        ),
        check(
            "rating_linf",
            "linf",
            l_infinity(batch["rating_counts"], reference["rating_counts"]),
            cfg.max_rating_linf,
            f"rating values batch {sorted(batch['rating_counts'])} vs "
            f"reference {sorted(reference['rating_counts'])}",
        ),
    ]
    share, n, total = _share_unseen(batch["user_counts"], reference["user_counts"])
    out.append(
        check(
            "unseen_users",
            "share",
            share,
            cfg.max_unseen_users,
            f"{n} of {total} users in the batch are unknown to the champion",
        )
    )
    share, n, total = _share_unseen(batch["item_counts"], reference["item_counts"])
    out.append(
        check(
            "unseen_items",
            "share",
            share,
            cfg.max_unseen_items,
            f"{n} of {total} items in the batch are unknown to the champion",
        )
    )
    if serving_requests:
        trained = reference["user_counts"]
        requests = sum(serving_requests.values())
        unknown = sum(c for u, c in serving_requests.items() if u not in trained)
        out.append(
            check(
                "serving_unknown_users",
                "share",
                unknown / requests,
                cfg.max_serving_unknown_users,
                f"{unknown} of {requests} served requests were for untrained users",
            )
        )
        out.append(
            check(
                "serving_user_jsd",
                "jsd",
                jensen_shannon(serving_requests, trained),
                cfg.max_serving_user_jsd,
                f"requested users ({len(serving_requests)}) vs training users ({len(trained)})",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Report (an extra page in the run's Data Docs)


def html_report(checks: list[Check], *, title: str, status: str, note: str = "") -> str:
    import html

    rows = "\n".join(
        f"<tr class={'ok' if c.passed else 'bad'}><td>{html.escape(c.name)}</td>"
        f"<td>{c.measure}</td><td>{c.value:.4f}</td><td>{c.limit:.4f}</td>"
        f"<td>{'pass' if c.passed else 'FAIL'}</td><td>{html.escape(c.detail)}</td></tr>"
        for c in checks
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}tr.bad{{background:#fdd}}tr.ok{{background:#efe}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Status: <b>{html.escape(status)}</b></p>
<p>{html.escape(note)}</p>
<table><tr><th>check</th><th>measure</th><th>value</th><th>limit</th><th>result</th>
<th>detail</th></tr>
{rows}
</table>
<p>JSD: Jensen-Shannon divergence, log base 2 (0 = same distribution, 1 = disjoint).
L-inf: largest difference of one category's probability. Shares are of distinct ids.</p>
</body></html>
"""
