"""Moving a blessed model into serving without ever exposing an unverified version.

Every change to what is served is a new model config (TF Serving's ``model_config_list``),
written atomically to the config file (so a restarted or polling server sees it) and applied
at once with ``HandleReloadConfigRequest``. If the server refuses a config, the file is put
back as it was: the config on disk and the config in force never disagree for long.

Label moves take two writes because TF Serving only lets a label point at a loaded version:
    deploy_canary:  serve {stable, new}          -> wait AVAILABLE -> label canary=new
    promote_stable: label stable=new (canary=new) -> drop canary, serve {previous, new}
"""

from __future__ import annotations

import contextlib
import dataclasses
import filecmp
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from recflow.errors import PromotionError, RecflowError, VerificationFailed
from recflow.jsontypes import JSONObject
from recflow.serving.model_config import ModelEntry, read_entries, write_entries
from recflow.storage import copy_tree_atomic

STABLE = "stable"
CANARY = "canary"


class ModelServer(Protocol):
    """The part of a TF-Serving-compatible server that promotion needs (see ServingClient)."""

    def reload_config(self, entries: Mapping[str, ModelEntry]) -> None: ...

    def wait_until_available(self, model: str, version: int, *, timeout: float) -> None: ...

    def predict(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> dict[str, np.ndarray]: ...


def install_version(saved_model_dir: Path, model_dir: Path, version: int) -> Path:
    """Copy a SavedModel to ``<model_dir>/<version>/`` in one rename (TF Serving's layout).

    A retried task finds the folder already there: accepted if it holds the same model.
    """
    target = model_dir / str(version)
    if target.exists():
        same = filecmp.cmp(saved_model_dir / "saved_model.pb", target / "saved_model.pb", False)
        if not same:
            raise PromotionError(
                f"{target} already holds a different model than {saved_model_dir}; "
                "version folders are immutable: register a new version instead"
            )
        return target
    copy_tree_atomic(saved_model_dir, target)
    return target


# Served answers, expected answers -> what differs (empty: the same). Each serving contract
# brings its own: the recommender's below, the policy's in recflow.pipeline.policy.deploy.
Comparison = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], list[str]]


def compare_recommendations(
    served: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    *,
    rtol: float | None = None,
) -> list[str]:
    """The recommender contract: ``recflow.serving.compare.compare_answers`` against the
    reference (``reference_answers``: top-(K+m), so boundary ties are recognised); scores may
    differ within ``rtol`` of the row's largest score (default ``TF32_RTOL``)."""
    from recflow.serving.compare import TF32_RTOL, compare_answers

    return compare_answers(served, expected, rtol=TF32_RTOL if rtol is None else rtol)


class Promotion(Protocol):
    """What the pipelines' deploy, promote and rollback stages need of a promoter."""

    model_dir: Path
    config_file: Path

    def label(self, label: str) -> int | None: ...

    def deploy_canary(self, saved_model_dir: Path, version: int) -> bool: ...

    def verify_canary(
        self, version: int, inputs: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
    ) -> JSONObject: ...

    def abort_canary(self, version: int) -> None: ...

    def promote_stable(self, version: int) -> int | None: ...

    def rollback(self, version: int) -> int: ...


class Promoter:
    """Applies the promotion steps for one model through the config file and the server."""

    def __init__(
        self,
        server: ModelServer,
        config_file: Path,
        model_name: str,
        model_base_path: Path,
        *,
        load_timeout: float = 120.0,
        compare: Comparison | None = None,
    ) -> None:
        self.server = server
        self.compare: Comparison = compare or compare_recommendations
        self.config_file = Path(config_file)
        self.model_name = model_name
        self.model_dir = Path(model_base_path) / model_name
        self.load_timeout = load_timeout

    # -- reading state --------------------------------------------------------------------
    def entries(self) -> dict[str, ModelEntry]:
        return dict(read_entries(self.config_file))

    def entry(self) -> ModelEntry:
        found = self.entries().get(self.model_name)
        if found is not None:
            return found
        return ModelEntry(
            name=self.model_name, base_path=str(self.model_dir), versions=(), labels={}
        )

    def label(self, label: str) -> int | None:
        return self.entry().labels.get(label)

    # -- applying a config ----------------------------------------------------------------
    def _apply(self, entry: ModelEntry, why: str) -> None:
        before = self.entries()
        after = {**before, self.model_name: entry}
        write_entries(self.config_file, after)
        try:
            self.server.reload_config(after)
        except RecflowError as error:
            write_entries(self.config_file, before)
            server_note = self._restore(before, after, error)
            raise PromotionError(
                f"the model server refused the config for step '{why}': {error}; the previous "
                f"config is back in {self.config_file}{server_note}"
            ) from error

    def _restore(
        self, before: Mapping[str, ModelEntry], after: Mapping[str, ModelEntry], error: Exception
    ) -> str:
        """Put the server back on ``before`` after a failed reload; a note for the message.

        A refused config changed nothing, but a reload that failed while loading (TF Serving
        applies the config, then waits for the new models) or whose deadline expired (the
        server goes on loading) leaves the new config in force. Reloading ``before`` undoes
        it; after an expired deadline, first wait (up to ``load_timeout``) for the versions
        being loaded to settle, since the server applies one config at a time.
        """
        from recflow.errors import DeadlineExceeded, ServerUnavailable

        if isinstance(error, ServerUnavailable):
            return " (the server was unreachable: it reads the file when it comes back)"
        if isinstance(error, DeadlineExceeded):
            old = before.get(self.model_name)
            new = after.get(self.model_name)
            added = set(new.versions if new else ()) - set(old.versions if old else ())
            for version in sorted(added):
                # failed or still loading: the reload below settles it either way
                with contextlib.suppress(RecflowError):
                    self.server.wait_until_available(
                        self.model_name, version, timeout=self.load_timeout
                    )
        # The same config again is harmless: retried while only its deadline expires (the
        # server still applies it), up to load_timeout.
        give_up = time.monotonic() + self.load_timeout
        while True:
            try:
                self.server.reload_config(before)
                return " and in force on the server"
            except RecflowError as again:
                if isinstance(again, DeadlineExceeded) and time.monotonic() < give_up:
                    continue
                return (
                    f", but the server still has the new one ({again}); it returns to the "
                    "file's config at its next reload or config-file poll"
                )

    # -- steps ------------------------------------------------------------------------------
    def deploy_canary(self, saved_model_dir: Path, version: int) -> bool:
        """Serve ``version`` beside stable under label ``canary``; False if it already is
        stable (a re-run after promotion: nothing to do). Re-running it changes nothing."""
        install_version(saved_model_dir, self.model_dir, version)
        entry = self.entry()
        if entry.labels.get(STABLE) == version:
            return False
        if version not in entry.versions:
            entry = dataclasses.replace(entry, versions=tuple(sorted({*entry.versions, version})))
            self._apply(entry, f"load version {version}")
        try:
            self.server.wait_until_available(self.model_name, version, timeout=self.load_timeout)
        except RecflowError as error:
            self.abort_canary(version)
            raise PromotionError(
                f"version {version} did not become AVAILABLE: {error}; it was removed from "
                "the config and the stable version keeps serving"
            ) from error
        if entry.labels.get(CANARY) != version:
            self._apply(
                dataclasses.replace(entry, labels={**entry.labels, CANARY: version}),
                f"label canary={version}",
            )
        return True

    def verify_canary(
        self, version: int, inputs: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
    ) -> JSONObject:
        """Predict ``inputs`` through the ``canary`` label; ``compare`` with ``expected``.

        Any difference withdraws the canary (stable keeps serving) and raises.
        """
        if self.label(CANARY) != version:
            raise VerificationFailed(
                f"label canary points at {self.label(CANARY)}, expected version {version}"
            )
        served = self.server.predict(self.model_name, inputs, label=CANARY)
        problems = self.compare(served, expected)
        requests = len(next(iter(inputs.values()))) if inputs else 0
        if problems:
            self.abort_canary(version)
            raise VerificationFailed(
                f"canary version {version} answered {requests} requests unlike the exported "
                f"model ({'; '.join(problems)}); it was withdrawn, stable keeps serving"
            )
        return {"requests_checked": requests, "version": version}

    def abort_canary(self, version: int) -> None:
        """Withdraw a version that is not (yet) stable; stable keeps serving."""
        entry = self.entry()
        if entry.labels.get(STABLE) == version:
            return
        labels = {k: v for k, v in entry.labels.items() if v != version}
        versions = tuple(v for v in entry.versions if v != version)
        # Labels first: TF Serving refuses a label on a version it is about to unload.
        if labels != dict(entry.labels):
            self._apply(dataclasses.replace(entry, labels=labels), f"unlabel {version}")
        self._apply(
            dataclasses.replace(entry, versions=versions, labels=labels), f"unload {version}"
        )

    def promote_stable(self, version: int) -> int | None:
        """Move ``stable`` to ``version``; returns the version that was stable before.

        Re-running it once done changes nothing and returns the version kept loaded beside
        it (the previous stable one), as the first run did.
        """
        entry = self.entry()
        if entry.labels.get(STABLE) == version and CANARY not in entry.labels:
            others = [v for v in entry.versions if v != version]
            return max(others) if others else None
        if entry.labels.get(CANARY) != version and entry.labels.get(STABLE) != version:
            raise PromotionError(
                f"version {version} is not the canary (labels: {dict(entry.labels)}); "
                "deploy and verify it as canary first"
            )
        previous = entry.labels.get(STABLE)
        if previous == version:  # a retry after the label moved: the newest other version
            others = [v for v in entry.versions if v != version]
            previous = max(others) if others else None
        self._apply(
            dataclasses.replace(entry, labels={**entry.labels, STABLE: version}),
            f"label stable={version}",
        )
        keep = tuple(sorted({version} | ({previous} if previous is not None else set())))
        self._apply(
            dataclasses.replace(entry, versions=keep, labels={STABLE: version}),
            f"serve only {keep}",
        )
        return previous

    def rollback(self, version: int) -> int:
        """Move ``stable`` back to ``version``; returns the version that was stable.

        Two writes when needed, as for promotion: first serve ``version`` beside the current
        stable one and wait until it is AVAILABLE (``version`` must already be installed
        under the model base path), then move the label and stop serving the rolled-back
        version. Requests by label never see an unloaded version.
        """
        entry = self.entry()
        current = entry.labels.get(STABLE)
        if current is None:
            raise PromotionError(
                f"nothing to roll back: label {STABLE} is not set for {self.model_name} in "
                f"{self.config_file}; promote a version first"
            )
        if current == version:
            return current  # already done (a retried task)
        if not (self.model_dir / str(version) / "saved_model.pb").is_file():
            raise PromotionError(
                f"cannot roll back to version {version}: expected "
                f"{self.model_dir / str(version) / 'saved_model.pb'}, found nothing; install it "
                "first (recflow.promotion.install_version)"
            )
        if version not in entry.versions:
            entry = dataclasses.replace(entry, versions=tuple(sorted({*entry.versions, version})))
            self._apply(entry, f"load version {version} for rollback")
        try:
            self.server.wait_until_available(self.model_name, version, timeout=self.load_timeout)
        except RecflowError as error:
            self.abort_canary(version)
            raise PromotionError(
                f"rollback target version {version} did not become AVAILABLE: {error}; it was "
                f"removed again and version {current} keeps serving as {STABLE}"
            ) from error
        labels = {k: v for k, v in entry.labels.items() if v != current}
        self._apply(
            dataclasses.replace(entry, labels={**labels, STABLE: version}),
            f"label stable={version} (rollback from {current})",
        )
        self._apply(
            # Labels on other versions go with them: only the restored version keeps serving.
            dataclasses.replace(entry, versions=(version,), labels={STABLE: version}),
            f"serve only {version} (rolled back {current})",
        )
        return current
