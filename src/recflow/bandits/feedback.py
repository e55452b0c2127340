"""Logged bandit feedback as arrays: the one shape every loader returns and every estimator reads.

Rounds are slots: a request that showed three items at positions 0, 1, 2 is three rounds, each
with the propensity the logging policy gave *that* item at *that* position (the Open Bandit
Dataset's convention, which position-wise estimators rely on). ``request`` says which rounds
came from one request, so a learn/evaluate split can keep a slate's slots together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recflow.errors import DataError
from recflow.jsontypes import JSONObject


@dataclass(frozen=True)
class LoggedFeedback:
    context: np.ndarray  # float64 [n, D]
    action: np.ndarray  # int64 [n], index into action_ids
    position: np.ndarray  # int64 [n], 0-based slot
    reward: np.ndarray  # float64 [n]; NaN marks a reward that never arrived
    pscore: np.ndarray  # float64 [n], logging policy's probability of (action, position)
    action_ids: tuple[str, ...]  # catalogue, index -> external id
    len_list: int = 1
    # item features [A, F] for reward models (OBD's item_context); None: one-hot actions
    action_context: np.ndarray | None = None
    policy_version: tuple[str, ...] = field(default=())  # per round, when the log records it
    # int64 [n]: equal values mark the slots of one request; None: not recorded by the loader
    request: np.ndarray | None = None

    @property
    def n_rounds(self) -> int:
        return int(self.action.shape[0])

    @property
    def n_actions(self) -> int:
        return len(self.action_ids)

    @property
    def dim_context(self) -> int:
        return int(self.context.shape[1])

    def on_policy_value(self) -> float:
        """Mean observed reward: the logging policy's value measured on-policy."""
        return float(np.mean(self.reward))

    def subset(self, index: np.ndarray) -> LoggedFeedback:
        """The rounds at ``index`` (a boolean mask or integer indices), same catalogue."""
        return LoggedFeedback(
            context=self.context[index],
            action=self.action[index],
            position=self.position[index],
            reward=self.reward[index],
            pscore=self.pscore[index],
            action_ids=self.action_ids,
            len_list=self.len_list,
            action_context=self.action_context,
            policy_version=tuple(np.asarray(self.policy_version, dtype=object)[index])
            if self.policy_version
            else (),
            request=None if self.request is None else self.request[index],
        )

    def check_shapes(self) -> None:
        """Raise DataError when the arrays disagree in length (a loader bug, not bad data)."""
        n = self.n_rounds
        sizes = {
            "context": self.context.shape[0],
            "position": self.position.shape[0],
            "reward": self.reward.shape[0],
            "pscore": self.pscore.shape[0],
            **({} if self.request is None else {"request": self.request.shape[0]}),
        }
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad or self.context.ndim != 2:
            raise DataError(
                f"logged feedback: expected {n} rows in every array and a 2-D context, found "
                f"{bad or 'context ndim ' + str(self.context.ndim)}; rebuild it with a loader"
            )


FEEDBACK_FILE = "feedback.npz"
FEEDBACK_META = "feedback.json"


def save_feedback(feedback: LoggedFeedback, folder: Path, meta: JSONObject | None = None) -> Path:
    """Write ``feedback`` (arrays + catalogue + ``meta``) to ``folder`` in one rename."""
    import json

    from recflow.storage import atomic_directory

    arrays = {
        "context": feedback.context,
        "action": feedback.action,
        "position": feedback.position,
        "reward": feedback.reward,
        "pscore": feedback.pscore,
        "policy_version": np.asarray(feedback.policy_version, dtype=str),
    }
    if feedback.action_context is not None:
        arrays["action_context"] = feedback.action_context
    if feedback.request is not None:
        arrays["request"] = feedback.request
    head = {
        "action_ids": list(feedback.action_ids),
        "len_list": feedback.len_list,
        "n_rounds": feedback.n_rounds,
        **(meta or {}),
    }
    with atomic_directory(Path(folder)) as scratch:
        np.savez(scratch / FEEDBACK_FILE, **arrays)  # type: ignore[arg-type]
        (scratch / FEEDBACK_META).write_text(json.dumps(head, indent=2), encoding="utf-8")
    return Path(folder)


def read_feedback(folder: Path) -> tuple[LoggedFeedback, JSONObject]:
    """(feedback, meta) written by :func:`save_feedback`."""
    import json

    folder = Path(folder)
    if not (folder / FEEDBACK_FILE).is_file():
        raise DataError(
            f"logged feedback: expected {folder / FEEDBACK_FILE}, found nothing; run the "
            "load_feedback step first"
        )
    meta = json.loads((folder / FEEDBACK_META).read_text(encoding="utf-8"))
    with np.load(folder / FEEDBACK_FILE, allow_pickle=False) as z:
        feedback = LoggedFeedback(
            context=z["context"],
            action=z["action"],
            position=z["position"],
            reward=z["reward"],
            pscore=z["pscore"],
            action_ids=tuple(meta["action_ids"]),
            len_list=int(meta["len_list"]),
            action_context=z["action_context"] if "action_context" in z.files else None,
            policy_version=tuple(str(v) for v in z["policy_version"]),
            request=z["request"] if "request" in z.files else None,
        )
    return feedback, meta
