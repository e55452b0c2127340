"""Infra validation: load a candidate in a sandboxed model server before it may be promoted.

What TFX's InfraValidator does, for this platform: the SavedModel is copied into a temporary
model base path with its own model config, a model server is started for it alone on a free
port (``tensorflow_model_server`` if it is on PATH, else ``recflow-model-server`` in a
subprocess), the version is loaded through ``HandleReloadConfigRequest`` and must become
AVAILABLE within a timeout, then the warmup requests stored in the model
(``assets.extra/tf_serving_warmup_requests``) plus one cold-start request are replayed over
gRPC Predict and every answer must match what the same SavedModel answers in-process
(``recflow.serving.compare``: same items and order up to near-ties, scores within a
tolerance a GPU computing in TF32 meets).

The production server is never touched: a model that crashes the loader, loads too slowly, or
answers differently once served is caught here. ``validate_model`` returns a result with the
reason instead of raising, so the pipeline stage can record it before failing the task.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow import contract
from recflow.errors import (
    ContractError,
    ModelNotReady,
    RecflowError,
    ServerUnavailable,
    ServingError,
)
from recflow.jsontypes import JSONObject
from recflow.serving.server_process import EMPTY_MODEL_CONFIG, ServerProcess, free_port

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictRequest

    from recflow.serving.client import ServingClient

SANDBOX_MODEL = "infra-validation"
SANDBOX_VERSION = 1
COLD_START_USER = "__recflow_infra_validation_unknown_user__"
TF_SERVING_BINARY = "tensorflow_model_server"


@dataclasses.dataclass(frozen=True)
class InfraValidationConfig:
    load_timeout_seconds: float = 120.0  # until AVAILABLE, per attempt
    start_timeout_seconds: float = 60.0  # until the sandbox server listens
    attempts: int = 2  # sandbox start-ups tried when the infrastructure (not the model) fails
    request_timeout_seconds: float = 30.0
    # served vs in-process answers (recflow.serving.compare): a GPU in TF32 passes
    atol: float = 1e-6
    rtol: float = 5e-3  # recflow.serving.compare.TF32_RTOL
    # None: tensorflow_model_server if on PATH, else the local server; or force either one
    server: str | None = None


@dataclasses.dataclass
class InfraValidationResult:
    passed: bool
    reason: str
    server: str = ""
    attempts: int = 0
    load_seconds: float | None = None
    requests: int = 0
    rows: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    # True: the sandbox itself failed (no verdict on the model; worth retrying later)
    infrastructure: bool = False

    def to_dict(self) -> JSONObject:
        return dataclasses.asdict(self)


class _Refused(RecflowError):
    """The candidate itself is at fault (no retry): load error, wrong answers, bad warmup."""


def server_command(kind: str | None, port: int, config_file: Path) -> tuple[str, list[str]]:
    """(name, argv) of the sandbox server; TF Serving's binary when present or asked for."""
    binary = shutil.which(TF_SERVING_BINARY)
    if kind == TF_SERVING_BINARY or (kind is None and binary):
        if not binary:
            raise ServerUnavailable(
                f"infra validation: expected {TF_SERVING_BINARY} on PATH, found none; install "
                "it or leave the server choice empty to use recflow-model-server"
            )
        args = [binary]
        name = TF_SERVING_BINARY
    else:
        args = [sys.executable, "-m", "recflow.serving.server"]
        name = "recflow-model-server"
    return name, [
        *args,
        f"--port={port}",
        f"--model_config_file={config_file}",
        # Loads happen only through the reload RPC below: no polling races with it.
        "--file_system_poll_wait_seconds=0",
    ]


def read_warmup_requests(saved_model_dir: Path) -> list[PredictRequest]:
    """The PredictRequests of ``assets.extra/tf_serving_warmup_requests`` (ContractError if none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(saved_model_dir) / contract.WARMUP_RELATIVE_PATH
    if not path.is_file():
        raise ContractError(
            f"infra validation: expected warmup requests at {path}, found none; export the "
            "model with recflow.models.export_model (it writes them)"
        )
    requests = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            entry = prediction_log_pb2.PredictionLog()
            entry.ParseFromString(record.numpy())
            if entry.WhichOneof("log_type") == "predict_log":
                requests.append(entry.predict_log.request)
    except (tf.errors.OpError, ValueError) as exc:
        raise ContractError(f"infra validation: unreadable warmup file {path}: {exc}") from exc
    if not requests:
        raise ContractError(
            f"infra validation: expected Predict requests in {path}, found none; re-export"
        )
    return requests[: contract.MAX_WARMUP_RECORDS]


def compare_outputs(
    served: dict[str, np.ndarray], offline: dict[str, np.ndarray], *, atol: float, rtol: float
) -> list[str]:
    """What differs between the served and the in-process answers (empty: same behaviour).

    The comparison the canary check uses too (``recflow.serving.compare.compare_answers``):
    scores within ``rtol`` of the row's largest score, near-ties may swap.
    """
    from recflow.serving.compare import compare_answers

    return compare_answers(served, offline, rtol=rtol, atol=atol)


def _decode(values: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v,
                        otypes=[object])(values) if values.size else values  # fmt: skip


class _Sandbox(ServerProcess):
    """One model server process serving only the candidate, from a temporary base path."""

    def __init__(self, saved_model_dir: Path, root: Path, cfg: InfraValidationConfig) -> None:
        from recflow.storage import atomic_write_text, copy_tree_atomic

        self.cfg = cfg
        self.base = root / "models" / SANDBOX_MODEL
        if not (self.base / str(SANDBOX_VERSION)).exists():
            copy_tree_atomic(saved_model_dir, self.base / str(SANDBOX_VERSION))
        self.config_file = root / "models.config"
        atomic_write_text(self.config_file, EMPTY_MODEL_CONFIG)
        port = free_port()
        name, argv = server_command(cfg.server, port, self.config_file)
        super().__init__(argv, port=port, log_file=root / f"server-{port}.log", name=name)

    def start(self, timeout: float | None = None) -> _Sandbox:
        return super().start(self.cfg.start_timeout_seconds if timeout is None else timeout)


def _load(sandbox: _Sandbox, client: ServingClient) -> float:
    """Load the candidate by reload RPC and wait for AVAILABLE; seconds taken."""
    from recflow.serving.model_config import ModelEntry

    started = time.monotonic()
    entry = ModelEntry(SANDBOX_MODEL, str(sandbox.base), (SANDBOX_VERSION,), {})
    try:
        client.reload_config([entry])
    except ServerUnavailable:
        raise
    except ServingError as exc:
        # The server refused the config because the version failed to load: the model's fault.
        raise _Refused(f"the SavedModel failed to load in {sandbox.name}: {exc}") from None
    try:
        client.wait_until_available(
            SANDBOX_MODEL, SANDBOX_VERSION, timeout=sandbox.cfg.load_timeout_seconds, poll=0.2
        )
    except ModelNotReady as exc:
        if "failed to load" in str(exc):
            raise _Refused(f"the SavedModel failed to load in {sandbox.name}: {exc}") from None
        raise
    return time.monotonic() - started


def _users_of(requests: Sequence[PredictRequest]) -> list[np.ndarray]:
    """The user ids of each warmup request (the contract's only input)."""
    import tensorflow as tf

    out = []
    for i, request in enumerate(requests):
        if set(request.inputs) != {contract.INPUT_USER_ID}:
            raise ContractError(
                f"infra validation: warmup request {i + 1} has inputs {sorted(request.inputs)}; "
                f"expected only {contract.INPUT_USER_ID!r} (serving contract "
                f"{contract.CONTRACT_VERSION}); re-export the model"
            )
        # Decoded: the offline recommender takes str ids (str(b"u1") would be another user).
        out.append(_decode(np.asarray(tf.make_ndarray(request.inputs[contract.INPUT_USER_ID]))))
    return out


def _replay(
    sandbox: _Sandbox,
    client: ServingClient,
    batches: Sequence[np.ndarray],
    offline: Callable[[np.ndarray], dict[str, np.ndarray]],
) -> tuple[int, list[str]]:
    """Send each batch through gRPC Predict and compare with the in-process answers."""
    rows, problems = 0, []
    for i, users in enumerate(batches):
        try:
            served = client.predict(
                SANDBOX_MODEL, {contract.INPUT_USER_ID: users}, version=SANDBOX_VERSION
            )
        except ServerUnavailable:
            raise
        except ServingError as exc:
            raise _Refused(f"request {i + 1} failed when served: {exc}") from None
        for key in (contract.OUTPUT_ITEM_IDS, contract.OUTPUT_TITLES):
            if key in served:
                served[key] = _decode(served[key])
        want = offline(users)
        for problem in compare_outputs(served, want, atol=sandbox.cfg.atol, rtol=sandbox.cfg.rtol):
            problems.append(f"request {i + 1} ({len(users)} users): {problem}")
        rows += len(users)
    return rows, problems


def validate_model(
    saved_model_dir: Path,
    cfg: InfraValidationConfig | None = None,
    *,
    reference: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
    work_dir: Path | None = None,
) -> InfraValidationResult:
    """Load ``saved_model_dir`` in a sandboxed server and compare served with offline answers.

    ``reference`` is what the served answers must equal; by default the same SavedModel loaded
    in-process. Returns a result with ``passed`` and the ``reason``; never promotes anything.
    """
    from recflow.serving.client import ServingClient
    from recflow.serving.compare import reference_answers

    cfg = cfg or InfraValidationConfig()
    saved_model_dir = Path(saved_model_dir)
    result = InfraValidationResult(passed=False, reason="")
    if not (saved_model_dir / "saved_model.pb").is_file():
        result.reason = f"expected a SavedModel at {saved_model_dir}, found no saved_model.pb"
        return result
    try:
        # The warmup requests, then one user the model never saw (the cold-start path).
        batches = _users_of(read_warmup_requests(saved_model_dir))
        batches.append(np.asarray([COLD_START_USER], dtype=object))
    except ContractError as exc:
        result.reason = str(exc)
        return result
    last_error = ""
    with tempfile.TemporaryDirectory(prefix="recflow-infra-", dir=work_dir) as tmp:
        for attempt in range(1, max(1, cfg.attempts) + 1):
            result.attempts = attempt
            sandbox = _Sandbox(saved_model_dir, Path(tmp), cfg)
            result.server = sandbox.name
            try:
                sandbox.start()
                with ServingClient(sandbox.address, timeout=cfg.request_timeout_seconds) as client:
                    result.load_seconds = round(_load(sandbox, client), 3)
                    try:
                        offline = reference or reference_answers(saved_model_dir)
                    except ContractError as exc:
                        raise _Refused(f"the SavedModel does not load in-process: {exc}") from None
                    result.rows, result.problems = _replay(sandbox, client, batches, offline)
                    result.requests = len(batches)
                if result.problems:
                    result.reason = (
                        f"served answers differ from the offline model's in "
                        f"{len(result.problems)} place(s): " + "; ".join(result.problems[:5])
                    )
                    return result
                result.passed = True
                result.reason = (
                    f"loaded in {sandbox.name} in {result.load_seconds:.1f} s and answered "
                    f"{result.requests} requests ({result.rows} users) as offline"
                )
                return result
            except _Refused as exc:
                result.reason = str(exc)
                return result
            except (ServerUnavailable, ModelNotReady) as exc:
                # Infrastructure trouble (port taken, slow start): worth another sandbox.
                last_error = f"attempt {attempt}: {exc}"
            finally:
                sandbox.stop()
    result.reason = (
        f"the sandbox could not validate the model in {cfg.attempts} attempt(s); last: {last_error}"
    )
    result.infrastructure = True
    return result
