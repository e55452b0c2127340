"""Client of TF Serving's gRPC API (the real server or ``recflow-model-server``).

Every call carries a deadline; gRPC failures become ``recflow.errors`` types whose messages
say what to do. The TF Serving protos import tensorflow, so they are imported on first use.

Every call here is idempotent (Predict, GetModelMetadata, GetModelStatus, and
HandleReloadConfigRequest with the same config), so an UNAVAILABLE answer (server restarting,
connection refused, queue full) is retried with exponential backoff, at most ``attempts``
times and never past the call's deadline. Nothing else is retried: a refusal or an expired
deadline is the caller's to handle.

HandleReloadConfigRequest gets its own deadline, ``reload_timeout``: TF Serving answers it
only once every newly added model name is AVAILABLE (``ServerCore::AddModelsViaModelConfigList``
waits in ``WaitUntilModelsAvailable``), which on a cold GPU includes CUDA start-up and the
warmup replay; and it holds the config lock meanwhile, so any reload may wait behind a load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import grpc
import numpy as np

from recflow import contract
from recflow.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    ServerUnavailable,
    ServingError,
)
from recflow.jsontypes import JSONObject
from recflow.serving.stubs import Req, Resp, Rpc, StubFactory, Stubs, grpc_stubs

if TYPE_CHECKING:
    from tensorflow.core.protobuf.meta_graph_pb2 import TensorInfo
    from tensorflow_serving.apis.predict_pb2 import PredictResponse
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    from recflow.serving.model_config import ModelEntry

STATE_NAMES = {
    0: "UNKNOWN",
    10: "START",
    20: "LOADING",
    30: "AVAILABLE",
    40: "UNLOADING",
    50: "END",
}
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RETRY_FIRST_DELAY = 0.1  # seconds before the first retry on UNAVAILABLE, doubled each time
RETRY_MAX_DELAY = 2.0
DEFAULT_RELOAD_TIMEOUT = 300.0  # ServingConfig.reload_timeout_seconds


@dataclass(frozen=True)
class Recommendation:
    user_id: str  # as the caller passed it
    items: list[tuple[str, str, float]]  # (item_id, title, score), best first
    model_version: int
    # why each item is recommended, aligned with ``items`` (contract 1.1; [] for older models)
    reasons: list[str] = field(default_factory=list)
    # the id the model saw when ``recflow.serving.recommender.RecommenderClient`` hashed it
    pseudonym: str = ""


class VersionStatus(NamedTuple):
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error: str | None


def start_hint(address: str) -> str:
    port = address.rsplit(":", 1)[-1]
    return (
        f"start one with `make serve` or `recflow-model-server --model_config_file "
        f"<models.config> --port {port}`, or point --server at the right host:port"
    )


def map_rpc_error(
    exc: grpc.RpcError, *, address: str, what: str, connected: bool = True
) -> ServingError:
    """Turn a gRPC failure into the recflow error a caller can act on.

    ``connected`` says whether the channel ever reached the server; a deadline that expires
    before that means nobody is listening.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    if code == grpc.StatusCode.UNAVAILABLE or (
        code == grpc.StatusCode.DEADLINE_EXCEEDED and not connected
    ):
        return ServerUnavailable(
            f"{what}: no model server answered at {address} ({details}); {start_hint(address)}"
        )
    # TF Serving answers an unknown label with INVALID_ARGUMENT; to a caller it is "not found".
    if code == grpc.StatusCode.NOT_FOUND or (
        code == grpc.StatusCode.INVALID_ARGUMENT
        and details.startswith("Unrecognized servable version label")
    ):
        return ModelNotFound(
            f"{what}: {details}. Check the model name, version or label; `recommend status "
            f"--server {address} --model <name>` lists what is served"
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequest(f"{what}: the server rejected the request: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            f"{what}: no answer from {address} within the deadline ({details}); the server is "
            "up but busy or still loading: retry or raise --timeout"
        )
    return ServingError(f"{what}: server answered {code.name}: {details}")


class ServingClient:
    """``with ServingClient("127.0.0.1:8500") as c: c.recommend("recommender", ["u1"])``.

    It sends the user ids it is given; an application holding raw ids uses
    ``recflow.serving.recommender.RecommenderClient``, which pseudonymises and logs them.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 10.0,
        reload_timeout: float = DEFAULT_RELOAD_TIMEOUT,
        attempts: int = 4,
        on_retry: Callable[[int, ServingError], None] | None = None,
        stubs: StubFactory = grpc_stubs,
    ) -> None:
        """``timeout``: deadline of each call (retries included); ``reload_timeout``: the
        deadline of HandleReloadConfigRequest. ``attempts``: tries per call on UNAVAILABLE;
        ``on_retry(attempt, error)`` is called before each retry (logs, tests).
        ``stubs``: makes the two service stubs over the client's channel on first use (tests
        pass fakes).
        """
        self.address = address
        self.timeout = timeout
        self.reload_timeout = reload_timeout
        self.attempts = max(1, attempts)
        self.on_retry = on_retry
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                # Reconnect soon after a refused connection, so a retry can reach a server
                # that came back (gRPC's default first backoff is 1 s, growing to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", int(RETRY_MAX_DELAY * 1000)),
                # Own connections: a new client (a retried task) never inherits another
                # client's connection still backing off from a refusal.
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        self._stub_factory = stubs
        self._stubs: Stubs | None = None

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def stubs(self) -> Stubs:
        if self._stubs is None:
            self._stubs = self._stub_factory(self._channel)
        return self._stubs

    def _connected(self) -> bool:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=0.2)
        except grpc.FutureTimeoutError:
            return False
        return True

    def _call(
        self, method: Rpc[Req, Resp], request: Req, what: str, timeout: float | None = None
    ) -> Resp:
        """One idempotent call: retried on UNAVAILABLE with backoff, within one deadline."""
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        delay = RETRY_FIRST_DELAY
        for attempt in range(1, self.attempts + 1):
            remaining = budget if attempt == 1 else max(deadline - time.monotonic(), 0.001)
            try:
                return method(request, timeout=remaining)
            except grpc.RpcError as exc:
                code = exc.code()
                connected = code != grpc.StatusCode.DEADLINE_EXCEEDED or self._connected()
                error = map_rpc_error(exc, address=self.address, what=what, connected=connected)
                retry = code == grpc.StatusCode.UNAVAILABLE and attempt < self.attempts
                if not retry or deadline - time.monotonic() <= delay:
                    if attempt > 1:
                        error = type(error)(f"{error} (after {attempt} attempts)")
                    raise error from None
            if self.on_retry is not None:
                self.on_retry(attempt, error)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
        raise AssertionError("unreachable: the last attempt raises")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- prediction --------------------------------------------------------------------------
    def _predict_response(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None,
        label: str | None,
        signature: str,
    ) -> PredictResponse:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = int(version)
        elif label:
            request.model_spec.version_label = label
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        spec = (
            f"version {version}"
            if version is not None
            else f"label {label!r}"
            if label
            else "latest"
        )
        return self._call(self.stubs.prediction.Predict, request, f"Predict {model} ({spec})")

    def predict(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = contract.SIGNATURE_NAME,
    ) -> dict[str, np.ndarray]:
        """Outputs by name; string tensors come back as object arrays of bytes."""
        import tensorflow as tf

        response = self._predict_response(
            model, inputs, version=version, label=label, signature=signature
        )
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def predict_with_version(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = contract.SIGNATURE_NAME,
    ) -> tuple[dict[str, np.ndarray], int]:
        """Like :meth:`predict`, plus the version that answered (a label resolves to one).

        A serving log (``recflow.bandits.client.PolicyClient``) must record which version
        chose a slate, and only the response knows it when the request named a label.
        """
        import tensorflow as tf

        response = self._predict_response(
            model, inputs, version=version, label=label, signature=signature
        )
        outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        return outputs, int(response.model_spec.version.value)

    def recommend(
        self,
        model: str,
        user_ids: Sequence[str],
        *,
        k: int = 10,
        version: int | None = None,
        label: str | None = "stable",
    ) -> list[Recommendation]:
        """Top-``k`` per user id, sent as given (a version, when given, wins over the label)."""
        import tensorflow as tf

        if k < 1:
            raise InvalidRequest(f"k must be >= 1, found {k}")
        users = [str(u) for u in user_ids]
        if not users:
            return []
        response = self._predict_response(
            model,
            {contract.INPUT_USER_ID: np.asarray(users, dtype=object)},
            version=version,
            label=None if version is not None else label,
            signature=contract.SIGNATURE_NAME,
        )
        out = {k_: tf.make_ndarray(v) for k_, v in response.outputs.items()}
        missing = {contract.OUTPUT_ITEM_IDS, contract.OUTPUT_SCORES, contract.OUTPUT_TITLES} - set(
            out
        )
        if missing:
            raise ServingError(
                f"model {model} version {response.model_spec.version.value} does not meet the "
                f"serving contract: outputs {sorted(missing)} missing, found {sorted(out)}"
            )
        served_k = int(out[contract.OUTPUT_ITEM_IDS].shape[1])
        if k > served_k:
            raise InvalidRequest(
                f"k={k} is larger than the {served_k} items model {model} version "
                f"{response.model_spec.version.value} returns per user; ask for k <= {served_k} "
                "or export the model with a larger top_k"
            )
        served = int(response.model_spec.version.value)
        recs = []
        for row, user in enumerate(users):
            items = [
                (
                    _text(out[contract.OUTPUT_ITEM_IDS][row, j]),
                    _text(out[contract.OUTPUT_TITLES][row, j]),
                    float(out[contract.OUTPUT_SCORES][row, j]),
                )
                for j in range(k)
            ]
            reasons = (
                [_text(out[contract.OUTPUT_REASONS][row, j]) for j in range(k)]
                if contract.OUTPUT_REASONS in out
                else []
            )
            recs.append(Recommendation(user, items, served, reasons))
        return recs

    # -- model management --------------------------------------------------------------------
    def model_status(self, model: str, version: int | None = None) -> list[VersionStatus]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = int(version)
        response = self._call(self.stubs.models.GetModelStatus, request, f"GetModelStatus {model}")
        return [
            VersionStatus(
                int(s.version),
                STATE_NAMES.get(s.state, str(s.state)),
                s.status.error_message or None,
            )
            for s in sorted(response.model_version_status, key=lambda s: s.version)
        ]

    def wait_until_available(
        self, model: str, version: int, *, timeout: float, poll: float = 0.5
    ) -> None:
        """Block until ``version`` is AVAILABLE; ModelNotReady (with the last state) otherwise."""
        deadline = time.monotonic() + timeout
        last = "not known to the server yet"
        while True:
            try:
                rows = self.model_status(model, version)
            except ModelNotFound:
                rows = []
            for row in rows:
                if row.state == "AVAILABLE":
                    return
                last = f"state {row.state}" + (f", error: {row.error}" if row.error else "")
                if row.state == "END" and row.error:
                    raise ModelLoadFailed(
                        f"model {model} version {version} failed to load ({last}); fix the "
                        "SavedModel (see the server log) and publish it as a new version"
                    )
            if time.monotonic() >= deadline:
                raise ModelNotReady(
                    f"model {model} version {version} not AVAILABLE after {timeout:.0f}s "
                    f"(last: {last}); check that it is listed in the model config and that "
                    f"<base_path>/{version}/saved_model.pb exists, then wait longer"
                )
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def reload_config(
        self, config: ModelServerConfig | Mapping[str, ModelEntry] | Iterable[ModelEntry]
    ) -> None:
        """HandleReloadConfigRequest; returns once the server applied it, raises otherwise."""
        from tensorflow_serving.apis import model_management_pb2
        from tensorflow_serving.config import model_server_config_pb2 as pb

        from recflow.serving.model_config import to_proto

        proto = config if isinstance(config, pb.ModelServerConfig) else to_proto(config)
        request = model_management_pb2.ReloadConfigRequest(config=proto)
        response = self._call(
            self.stubs.models.HandleReloadConfigRequest,
            request,
            "HandleReloadConfigRequest",
            timeout=self.reload_timeout,
        )
        if response.status.error_code != 0:  # servers may answer OK with an error status
            raise ServingError(
                f"HandleReloadConfigRequest refused: {response.status.error_message}"
            )

    def metadata(self, model: str, version: int | None = None) -> JSONObject:
        """``{"model", "version", "signatures": {name: {"inputs", "outputs", "method_name"}}}``
        with each tensor as ``(dtype, shape)``, e.g. ``("DT_STRING", (-1,))``."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = int(version)
        request.metadata_field.append("signature_def")
        response = self._call(
            self.stubs.prediction.GetModelMetadata, request, f"GetModelMetadata {model}"
        )
        sigs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sigs)
        return {
            "model": response.model_spec.name,
            "version": int(response.model_spec.version.value),
            "signatures": {
                name: {
                    "method_name": sig.method_name,
                    "inputs": {k: _tensor_info(v) for k, v in sig.inputs.items()},
                    "outputs": {k: _tensor_info(v) for k, v in sig.outputs.items()},
                }
                for name, sig in sigs.signature_def.items()
            },
        }


def _tensor_info(info: TensorInfo) -> tuple[str, tuple[int, ...] | None]:
    from tensorflow.core.framework import types_pb2

    shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
    return types_pb2.DataType.Name(info.dtype), shape


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
