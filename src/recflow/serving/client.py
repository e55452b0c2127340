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
from typing import TYPE_CHECKING

import grpc
import numpy as np

from recflow import contract
from recflow.errors import (
    InvalidRequest,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    ServingError,
)
from recflow.jsontypes import JSONObject
from recflow.serving.replies import (
    STATE_NAMES,
    Recommendation,
    VersionStatus,
    map_rpc_error,
    recommendations,
    signatures,
)
from recflow.serving.stubs import Req, Resp, Rpc, StubFactory, Stubs, grpc_stubs

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictResponse
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    from recflow.serving.model_config import ModelEntry

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RETRY_FIRST_DELAY = 0.1  # seconds before the first retry on UNAVAILABLE, doubled each time
RETRY_MAX_DELAY = 2.0
DEFAULT_RELOAD_TIMEOUT = 300.0  # ServingConfig.reload_timeout_seconds


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
        return recommendations(out, users, k, model, int(response.model_spec.version.value))

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
            "signatures": signatures(sigs),
        }
