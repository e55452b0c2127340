"""The application's side of recommendations: raw user ids in, pseudonyms to the model server.

``ServingClient`` sends the ids it is given. An application that holds raw ids (the
``recommend`` CLI, the demo) goes through ``RecommenderClient``: it turns them into the keyed
pseudonyms the model was trained on (``recflow.privacy``) and, given a folder, appends each
request to the serving log the skew check reads (``recflow.drift``: pseudonymous ids only).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from recflow.serving.client import Recommendation, ServingClient


class RecommenderClient:
    """``with RecommenderClient(ServingClient(address)) as r: r.recommend("recommender", ["42"])``.

    ``pseudonym_key``: the key of ``recflow.privacy`` held by the application (default: the
    configured one, loaded when first needed; ConfigError without any). ``request_log``: a
    folder for serving logs. ``clock``: the time written in those logs (unix seconds).
    Leaving the ``with`` block closes the wrapped client.
    """

    def __init__(
        self,
        client: ServingClient,
        *,
        pseudonym_key: bytes | None = None,
        request_log: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.pseudonym_key = pseudonym_key
        self.request_log = request_log
        self._clock = clock

    def recommend(
        self,
        model: str,
        user_ids: Sequence[str],
        *,
        k: int = 10,
        version: int | None = None,
        label: str | None = "stable",
        pseudonymised: bool | None = None,
    ) -> list[Recommendation]:
        """Top-``k`` per user, as ``ServingClient.recommend``; each answer keeps the id given.

        ``pseudonymised``: True means the ids already are pseudonyms (sent as they are); False
        means hash them with the key given or the configured one; None (default) hashes when a
        key was given. Sent ids are logged when ``request_log`` is set and they are pseudonyms.
        """
        users = [str(u) for u in user_ids]
        if k < 1 or not users:  # refused (k) or nothing to ask, before any id is hashed or logged
            return self.client.recommend(model, users, k=k, version=version, label=label)
        hashed = pseudonymised is False or (
            pseudonymised is None and self.pseudonym_key is not None
        )
        sent = users
        if hashed:
            from recflow.privacy import load_key, pseudonymise

            sent = pseudonymise(users, self.pseudonym_key or load_key(create=False))
        if self.request_log is not None and (hashed or pseudonymised):
            from recflow.drift import append_serving_log

            append_serving_log(self.request_log, model, sent, self._clock())
        recs = self.client.recommend(model, sent, k=k, version=version, label=label)
        return [
            dataclasses.replace(rec, user_id=user, pseudonym=pseudonym if hashed else "")
            for rec, user, pseudonym in zip(recs, users, sent, strict=True)
        ]

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
