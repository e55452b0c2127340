"""Promotion and rollback under load: requests by label `stable` never fail during swaps, with
the server as it is and with its native front end (which must follow every swap at once)."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _savedmodel_fixture import publish_version

from recflow.contract import INPUT_USER_ID
from recflow.models import load_recommender
from recflow.net import free_port
from recflow.promotion import Promoter
from recflow.serving.client import ServingClient
from recflow.serving.model_config import ModelEntry, write_entries
from recflow.serving.server_process import ModelServerProcess

MODEL = "recommender"
ROOT = Path(__file__).resolve().parents[2]
RATE = 300.0  # requests per second, open loop


class LoadGenerator:
    """grpc.aio in its own thread: Predict by label `stable` at a fixed arrival rate."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.outcomes: Counter[str] = Counter()  # "v<version>" or the gRPC error code
        self.sequence: list[int] = []  # versions in completion order
        self._stop = threading.Event()
        self._answered = threading.Condition()  # guards outcomes/sequence; notified per answer
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.model_spec.version_label = "stable"
        tensor = request.inputs["user_id"]
        tensor.dtype = 7  # DT_STRING
        tensor.tensor_shape.dim.add(size=1)
        tensor.string_val.append(b"u1")
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            async def one() -> None:
                try:
                    response = await stub.Predict(request, timeout=10)
                except grpc.RpcError as exc:
                    with self._answered:
                        self.outcomes[exc.code().name] += 1
                        self._answered.notify_all()
                    return
                version = int(response.model_spec.version.value)
                with self._answered:
                    self.outcomes[f"v{version}"] += 1
                    self.sequence.append(version)
                    self._answered.notify_all()

            tasks: list[asyncio.Task[None]] = []
            start, sent = time.perf_counter(), 0
            while not self._stop.is_set():
                due = int((time.perf_counter() - start) * RATE) + 1
                for _ in range(due - sent):
                    tasks.append(asyncio.ensure_future(one()))
                sent = max(sent, due)
                await asyncio.sleep(1 / RATE)
            await asyncio.gather(*tasks)

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def total(self) -> int:
        return sum(self.outcomes.values())

    def wait_for(self, what: str, done: Callable[[], bool]) -> None:
        """Return once ``done()`` holds, checked at each answer. The test proceeds on counted
        answers, never on elapsed time; the timeout only bounds a hang."""
        with self._answered:
            assert self._answered.wait_for(done, timeout=120), f"never {what}: {self.outcomes}"

    def wait_answers(self, n: int) -> None:
        """Return once ``n`` more requests have been answered (or refused)."""
        with self._answered:
            target = self.total() + n
        self.wait_for(f"{n} more answers", lambda: self.total() >= target)


@pytest.mark.parametrize("native", [False, True], ids=["python", "native_frontend"])
def test_promote_and_roll_back_under_load(
    native: bool, model_sources: dict[str, Path], tmp_path: Path
) -> None:
    base = tmp_path / "models"
    publish_version(model_sources["A"], base / MODEL, 1)
    config = tmp_path / "models.config"
    write_entries(config, [ModelEntry(MODEL, str(base / MODEL), (1,), {"stable": 1})])
    port = free_port()
    users = ["u1", "u2", "stranger"]
    expected_b = load_recommender(model_sources["B"])(np.asarray(users, dtype=object))
    rest_port = free_port()
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }'
    )
    flags = (
        "--enable_batching",  # merged requests must be split back to the right callers
        f"--batching_parameters_file={ROOT / 'serving' / 'batching_parameters.txt'}",
        f"--rest_api_port={rest_port}",
        f"--monitoring_config_file={monitoring}",
        *(["--native_frontend"] if native else []),
    )
    with ModelServerProcess(
        config, port=port, log_file=tmp_path / "server.log", poll_seconds=1, extra_args=flags
    ):
        address = f"127.0.0.1:{port}"
        with ServingClient(address, timeout=10) as client:
            client.wait_until_available(MODEL, 1, timeout=30)
            promoter = Promoter(client, config, MODEL, base, load_timeout=30)
            with LoadGenerator(address) as load:
                load.wait_answers(100)  # under load before the first swap
                promoter.deploy_canary(model_sources["B"], 2)
                promoter.verify_canary(
                    2, {INPUT_USER_ID: np.asarray(users, dtype=object)}, expected_b
                )
                assert promoter.promote_stable(2) == 1
                load.wait_for("an answer from v2", lambda: load.outcomes["v2"] > 0)
                load.wait_answers(100)  # still under load when rolling back
                assert promoter.rollback(1) == 2
                load.wait_for(
                    "50 answers in a row from v1", lambda: load.sequence[-50:] == [1] * 50
                )
            url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
            metrics = urllib.request.urlopen(url, timeout=10).read().decode()
    failed = {k: n for k, n in load.outcomes.items() if not k.startswith("v")}
    assert failed == {}, f"requests failed during the swaps: {load.outcomes}"
    assert load.outcomes["v1"] > 0 and load.outcomes["v2"] > 0, load.outcomes
    assert load.sequence[-50:] == [1] * 50  # rolled back: stable answers from version 1 again
    ok = f':tensorflow:serving:request_count{{model_name="{MODEL}",api="Predict",status="OK"}}'
    counted = [line for line in metrics.splitlines() if line.startswith(ok)]
    assert counted and int(counted[0].split()[-1]) == load.total() + 1  # + verify_canary
    assert (
        f':tensorflow:serving:request_latency_count{{model_name="{MODEL}",API="Predict"' in metrics
    )
    assert ":tensorflow:serving:batching_session:processed_batch_size_bucket" in metrics
    assert f':recflow:serving:loaded_versions{{model_name="{MODEL}"}} 1' in metrics
