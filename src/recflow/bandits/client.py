"""The client side of the closed loop: ask the served policy, show a slate, log what happened.

``PolicyClient.choose(context, epsilon)`` calls Predict on the policy model (inputs
``context`` [1, D] and ``epsilon`` [1], see ``recflow.bandits.export``), draws the slate
position by position without replacement from ``action_probs`` and appends an impression
record (serving-log format v1, ``recflow.bandits.logformat``) holding, for every shown slot,
the exact probability of that action at that position (``recflow.bandits.slates``), the
version that answered (from the response, so a label such as ``stable`` resolves to a
number), a timestamp and the request id. ``record_reward(request_id, position, reward)``
appends the reward record when the outcome is known. The policy DAG reads such folders
(``source=serving_log``), so the next policy learns from what the current one did.

Logging happens here, not in the model server, because only the caller knows which slate it
actually showed (the server returns a distribution) and what the user did afterwards.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from recflow.bandits.logformat import BanditLogWriter
from recflow.bandits.slates import sample_slate, slate_marginals
from recflow.errors import DataError, ServingError
from recflow.jsontypes import JSONObject

# Names of the policy signature (recflow.bandits.export); repeated here so that importing
# the client does not import the exporter (and with it TensorFlow).
INPUT_CONTEXT = "context"
INPUT_EPSILON = "epsilon"
OUTPUT_ACTION_IDS = "action_ids"
OUTPUT_ACTION_PROBS = "action_probs"


class VersionedPredictor(Protocol):
    """What PolicyClient needs from a model server client (see ServingClient)."""

    def predict_with_version(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> tuple[dict[str, np.ndarray], int]: ...


@dataclass(frozen=True)
class Slate:
    request_id: str
    action_ids: tuple[str, ...]  # shown at positions 0, 1, ...
    propensities: tuple[float, ...]  # P(action_ids[k] at position k) under the served policy
    policy_version: str
    epsilon: float


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class PolicyClient:
    """Choose slates through a served policy and keep the serving log of what was shown.

    One JSON-lines file per client (host, pid and a random suffix in its name) under
    ``log_dir``: writers never share a file, and readers take the whole folder.
    """

    def __init__(
        self,
        predictor: VersionedPredictor,
        log_dir: Path,
        *,
        model: str = "policy",
        label: str | None = "stable",
        version: int | None = None,
        slate_size: int = 1,
        policy_name: str | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        max_pending: int = 100_000,
    ) -> None:
        if slate_size < 1:
            raise ValueError(f"slate_size: expected >= 1, found {slate_size}")
        self.predictor = predictor
        self.model = model
        self.label = label
        self.version = version
        self.slate_size = slate_size
        self.policy_name = policy_name or model
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        name = f"impressions-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.writer = BanditLogWriter(Path(log_dir) / name)
        # request id -> shown action ids, so a reward needs only (request id, position);
        # bounded because rewards that never come must not grow memory forever.
        self._pending: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._max_pending = max_pending

    @property
    def log_path(self) -> Path:
        return self.writer.path

    def choose(
        self, context: Sequence[float], epsilon: float, *, request_id: str | None = None
    ) -> Slate:
        """Predict, draw the slate, log the impression; returns what to show."""
        x = np.asarray(context, dtype=np.float32).reshape(1, -1)
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon: expected a value in [0, 1], found {epsilon}")
        outputs, served_version = self.predictor.predict_with_version(
            self.model,
            {INPUT_CONTEXT: x, INPUT_EPSILON: np.asarray([epsilon], dtype=np.float32)},
            version=self.version,
            label=None if self.version is not None else self.label,
        )
        missing = {OUTPUT_ACTION_IDS, OUTPUT_ACTION_PROBS} - set(outputs)
        if missing:
            raise ServingError(
                f"policy model {self.model} v{served_version}: expected outputs "
                f"{sorted({OUTPUT_ACTION_IDS, OUTPUT_ACTION_PROBS})}, missing {sorted(missing)}; "
                "is this a policy exported by recflow.bandits.export?"
            )
        ids = [_text(v) for v in np.asarray(outputs[OUTPUT_ACTION_IDS])[0]]
        probs = np.asarray(outputs[OUTPUT_ACTION_PROBS], dtype=np.float64)[0]
        if len(ids) < self.slate_size:
            raise ServingError(
                f"policy model {self.model} v{served_version} offers {len(ids)} actions, "
                f"expected at least the slate size {self.slate_size}"
            )
        shown = sample_slate(probs, self.slate_size, self.rng)
        marginals = slate_marginals(probs[None, :], self.slate_size)[0]
        propensities = tuple(float(marginals[a, k]) for k, a in enumerate(shown))
        rid = request_id or uuid.uuid4().hex
        slate = Slate(
            request_id=rid,
            action_ids=tuple(ids[a] for a in shown),
            propensities=propensities,
            policy_version=str(served_version),
            epsilon=float(epsilon),
        )
        self.writer.log_impression(
            request_id=rid,
            context=[float(v) for v in x[0]],  # float32 as sent: what the model saw
            action_ids=list(slate.action_ids),
            propensities=list(propensities),
            policy_name=self.policy_name,
            policy_version=slate.policy_version,
            epsilon=slate.epsilon,
            timestamp=self.clock(),
        )
        self._pending[rid] = slate.action_ids
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
        return slate

    def record_reward(
        self,
        request_id: str,
        position: int,
        reward: float,
        *,
        action_id: str | None = None,
    ) -> JSONObject:
        """Append the reward of slot ``position`` of an earlier ``choose``.

        ``action_id`` is needed only for requests this client no longer remembers (another
        process, or older than ``max_pending`` requests).
        """
        shown = self._pending.get(request_id)
        if shown is not None:
            if not 0 <= position < len(shown):
                raise DataError(
                    f"reward for request {request_id}: expected a position in 0..{len(shown) - 1}, "
                    f"found {position}"
                )
            if action_id is not None and action_id != shown[position]:
                raise DataError(
                    f"reward for request {request_id} position {position}: the slot showed "
                    f"{shown[position]!r}, found action_id {action_id!r}"
                )
            action_id = shown[position]
        elif action_id is None:
            raise DataError(
                f"reward for request {request_id}: expected a request this client served, "
                "found none; pass action_id= for requests served elsewhere"
            )
        return self.writer.log_reward(
            request_id=request_id,
            position=int(position),
            action_id=str(action_id),
            reward=float(reward),
            timestamp=self.clock(),
        )


class UniformPredictor:
    """A stand-in for a served policy before there is one: every action equally likely.

    Lets ``PolicyClient`` write the first serving log (cold start) in the same format as any
    later one; ``version`` (default 0, i.e. "no model") is what the log records.
    """

    def __init__(self, action_ids: Sequence[str], *, version: int = 0) -> None:
        if not action_ids:
            raise ValueError("UniformPredictor: expected at least one action id, found none")
        self.action_ids = np.asarray([str(a).encode() for a in action_ids], dtype=object)
        self.version = version

    def predict_with_version(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> tuple[dict[str, np.ndarray], int]:
        del model, version, label
        rows = int(np.asarray(inputs[INPUT_CONTEXT]).shape[0])
        n = self.action_ids.shape[0]
        return (
            {
                OUTPUT_ACTION_IDS: np.tile(self.action_ids, (rows, 1)),
                "action_scores": np.zeros((rows, n), dtype=np.float32),
                OUTPUT_ACTION_PROBS: np.full((rows, n), 1.0 / n, dtype=np.float32),
            },
            self.version,
        )
