"""Promotion on a cold GPU: a slow first load, simulated by ``--load_delay_seconds``.

The reload RPC blocks while the candidate loads (TF Serving does so for new model names; the
local server for every listed version). With a deadline shorter than the load it fails, and
the champion keeps serving with the previous config, on disk and on the server; with one
sized for the load, deploy waits and succeeds. Requests by label ``stable`` run throughout.
Nothing here is decided by elapsed time: the delay only makes the load outlast a deadline.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _savedmodel_fixture import publish_version

from recflow.errors import PromotionError, RecflowError
from recflow.net import free_port
from recflow.promotion import Promoter
from recflow.serving.client import ServingClient
from recflow.serving.model_config import ModelEntry, read_entries, write_entries
from recflow.serving.server_process import ModelServerProcess

MODEL = "recommender"
LOAD_DELAY = 4.0  # seconds each load waits; the short deadline below is far shorter


class StableTraffic:
    """One thread asking for label ``stable`` back to back; counts answers by version."""

    def __init__(self, address: str) -> None:
        self.outcomes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._client = ServingClient(address, timeout=30, attempts=1)  # no retries: see all
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        users = np.asarray(["u1", "stranger"], dtype=object)
        while not self._stop.is_set():
            try:
                _, version = self._client.predict_with_version(
                    MODEL, {"user_id": users}, label="stable"
                )
                self.outcomes[f"v{version}"] += 1
            except RecflowError as exc:
                self.outcomes[type(exc).__name__] += 1

    def __enter__(self) -> StableTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._client.close()


def _wait_for_state(client: ServingClient, version: int, state: str) -> None:
    """Poll GetModelStatus until ``version`` reports ``state`` (bounded; not a timing check)."""
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if any(s.state == state for s in client.model_status(MODEL, version)):
                return
        except RecflowError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"version {version} never reported {state}")


def test_slow_load_deadline_then_deploy(model_sources: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "models"
    publish_version(model_sources["A"], base / MODEL, 1)
    config = tmp_path / "models.config"
    write_entries(config, [ModelEntry(MODEL, str(base / MODEL), (1,), {"stable": 1})])
    port = free_port()
    server = ModelServerProcess(
        config,
        port=port,
        log_file=tmp_path / "server.log",
        poll_seconds=0,  # loads only through the reload RPC: no file poll races the test
        extra_args=(f"--load_delay_seconds={LOAD_DELAY}",),
    )
    with server, ServingClient(server.address, timeout=30) as client:
        client.wait_until_available(MODEL, 1, timeout=120)
        before = config.read_text()
        with StableTraffic(server.address) as traffic:
            # 1. A reload deadline shorter than the load: the step fails, nothing changes.
            with ServingClient(server.address, timeout=30, reload_timeout=0.5) as hasty:
                hasty.model_status(MODEL, 1)  # connected first: the deadline meets the load
                promoter = Promoter(hasty, config, MODEL, base, load_timeout=120)
                with pytest.raises(PromotionError) as failed:
                    promoter.deploy_canary(model_sources["B"], 2)
            message = str(failed.value)
            assert "within the deadline" in message and "in force on the server" in message
            assert config.read_text() == before
            assert [s.state for s in client.model_status(MODEL, 2)] == ["END"]
            assert [s.state for s in client.model_status(MODEL, 1)] == ["AVAILABLE"]
            answered_after_timeout = sum(traffic.outcomes.values())

            # 2. A deadline sized for the load (the default): deploy waits, then succeeds.
            promoter = Promoter(client, config, MODEL, base, load_timeout=120)
            done = threading.Event()
            errors: list[BaseException] = []

            def deploy() -> None:
                try:
                    promoter.deploy_canary(model_sources["B"], 2)
                except BaseException as exc:  # surfaced by the assertion below
                    errors.append(exc)
                done.set()

            worker = threading.Thread(target=deploy, daemon=True)
            worker.start()
            _wait_for_state(client, 2, "LOADING")
            assert not done.is_set()  # the step cannot finish while its version loads
            answered_when_loading = sum(traffic.outcomes.values())
            worker.join(timeout=300)
            assert done.is_set() and not errors, errors
            answered_when_deployed = sum(traffic.outcomes.values())
    assert answered_after_timeout > 0
    assert answered_when_deployed > answered_when_loading  # stable answered during the load
    failed_requests = {k: n for k, n in traffic.outcomes.items() if not k.startswith("v")}
    assert failed_requests == {}, traffic.outcomes
    assert set(traffic.outcomes) == {"v1"}  # stable never moved
    entry = read_entries(config)[MODEL]
    assert entry.versions == (1, 2) and dict(entry.labels) == {"stable": 1, "canary": 2}
    assert "Load delay" in (tmp_path / "server.log").read_text()
