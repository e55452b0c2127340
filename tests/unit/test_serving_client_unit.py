"""ServingClient without a server: error mapping, requests built, answers read."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from recflow.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    ServerUnavailable,
    ServingError,
)
from recflow.serving.client import DEFAULT_RELOAD_TIMEOUT, ServingClient, map_rpc_error
from recflow.serving.stubs import Stubs


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "connected", "kind", "text"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect", True, ServerUnavailable, "make serve"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", False, ServerUnavailable, "recflow-model-server"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", True, DeadlineExceeded, "raise --timeout"),
        (grpc.StatusCode.NOT_FOUND, "Servable not found", True, ModelNotFound, "recommend status"),
        (grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: x", True, ModelNotFound, "label: x"),
        (grpc.StatusCode.INVALID_ARGUMENT, "input size", True, InvalidRequest, "rejected"),
        (grpc.StatusCode.FAILED_PRECONDITION, "not currently available", True, ServingError, "FAILED_PRECONDITION"),
    ],
)  # fmt: skip
def test_error_mapping(code, details, connected, kind, text) -> None:
    err = map_rpc_error(
        FakeRpcError(code, details), address="h:8600", what="Predict m", connected=connected
    )
    assert type(err) is kind
    assert text in str(err) and str(err).startswith("Predict m:")
    if kind is ServerUnavailable:
        assert "--port 8600" in str(err)


def test_no_server_gives_server_unavailable_with_how_to_start() -> None:
    with (
        ServingClient("127.0.0.1:1", timeout=3) as client,
        pytest.raises(ServerUnavailable, match="make serve"),
    ):
        client.model_status("rec")


class FakeStub:
    """Records requests and answers from a queue (values or exceptions)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers, self.requests, self.timeouts = answers, [], []

    def _answer(self, request: Any, timeout: float) -> Any:
        # every call carries the client's deadline (the reload its own, sized for a load);
        # a retry carries what is left of it
        assert timeout in (5.0, DEFAULT_RELOAD_TIMEOUT) or 0 < timeout < self.timeouts[-1]
        self.requests.append(request)
        self.timeouts.append(timeout)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    Predict = GetModelStatus = HandleReloadConfigRequest = GetModelMetadata = _answer


class FakeClient(ServingClient):
    """A ServingClient whose ``stubs`` factory hands it two FakeStubs."""

    def __init__(self, prediction: list[Any], models: list[Any], **kwargs: Any) -> None:
        self.prediction_fake, self.models_fake = FakeStub(prediction), FakeStub(models)
        stubs = Stubs(self.prediction_fake, self.models_fake)
        super().__init__("127.0.0.1:1", timeout=5.0, stubs=lambda channel: stubs, **kwargs)


def client_with(prediction: list[Any], models: list[Any], **kwargs: Any) -> FakeClient:
    return FakeClient(prediction, models, **kwargs)


def predict_response(version: int, k: int = 3) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    r = predict_pb2.PredictResponse()
    r.model_spec.name, r.model_spec.version.value = "rec", version
    ids = np.array([[f"i{j}" for j in range(k)]], dtype=object)
    r.outputs["item_ids"].CopyFrom(tf.make_tensor_proto(ids))
    r.outputs["titles"].CopyFrom(
        tf.make_tensor_proto(np.array([[f"T{j}" for j in range(k)]], dtype=object))
    )
    r.outputs["scores"].CopyFrom(
        tf.make_tensor_proto(np.array([[0.9, 0.5, 0.1][:k]], dtype=np.float32))
    )
    return r


def test_recommend_builds_the_request_and_reads_the_answer() -> None:
    client = client_with([predict_response(4), predict_response(4)], [])
    [rec] = client.recommend("rec", ["u1"], k=2, label="canary")
    request = client.prediction_fake.requests[0]
    assert request.model_spec.version_label == "canary"
    assert request.model_spec.signature_name == "serving_default"
    assert request.inputs["user_id"].string_val == [b"u1"]
    assert rec.model_version == 4
    assert [(i, t) for i, t, _ in rec.items] == [("i0", "T0"), ("i1", "T1")]
    assert rec.items[0][2] == pytest.approx(0.9)
    client.recommend("rec", ["u1"], k=1, version=4, label="stable")  # the version wins
    request = client.prediction_fake.requests[1]
    assert request.model_spec.WhichOneof("version_choice") == "version"


def test_recommend_rejects_k_larger_than_the_model_serves() -> None:
    client = client_with([predict_response(2, k=3)], [])
    with pytest.raises(InvalidRequest, match="k=5 is larger than the 3 items"):
        client.recommend("rec", ["u1"], k=5)


def status_response(*rows: tuple[int, int, str]) -> Any:
    from tensorflow_serving.apis import get_model_status_pb2

    r = get_model_status_pb2.GetModelStatusResponse()
    for version, state, error in rows:
        item = r.model_version_status.add(version=version, state=state)
        item.status.error_message = error
    return r


def test_wait_until_available_polls_until_available() -> None:
    not_yet = FakeRpcError(grpc.StatusCode.NOT_FOUND, "Could not find version 2 of model rec")
    client = client_with([], [not_yet, status_response((2, 20, "")), status_response((2, 30, ""))])
    client.wait_until_available("rec", 2, timeout=5, poll=0.01)
    assert len(client.models_fake.requests) == 3


def test_wait_until_available_reports_the_last_state_or_the_load_error() -> None:
    client = client_with([], [status_response((2, 20, ""))] * 100)
    with pytest.raises(ModelNotReady, match="last: state LOADING"):
        client.wait_until_available("rec", 2, timeout=0.05, poll=0.01)
    client = client_with([], [status_response((2, 50, "ValueError: broken"))])
    with pytest.raises(ModelNotReady, match="failed to load.*broken"):
        client.wait_until_available("rec", 2, timeout=5, poll=0.01)


def test_model_status_and_reload_errors_carry_the_server_message() -> None:
    from recflow.serving.model_config import ModelEntry

    refused = FakeRpcError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "Request to assign label to version 3 of model rec, which is not currently available",
    )
    client = client_with([], [status_response((1, 30, ""), (2, 50, "boom")), refused])
    assert client.model_status("rec") == [(1, "AVAILABLE", None), (2, "END", "boom")]
    with pytest.raises(ServingError, match="version 3 of model rec, which is not currently"):
        client.reload_config([ModelEntry("rec", "/m", (1, 3), {"stable": 3})])
    sent = client.models_fake.requests[1].config.model_config_list.config[0]
    assert sent.version_labels["stable"] == 3


def test_unavailable_is_retried_within_the_deadline_and_nothing_else_is() -> None:
    from tensorflow_serving.apis import model_management_pb2

    down = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    retries: list[int] = []
    client = client_with(
        [],
        [down, down, model_management_pb2.ReloadConfigResponse()],
        on_retry=lambda attempt, error: retries.append(attempt),
    )
    client.reload_config([])  # two refusals, then the same request again succeeds
    assert retries == [1, 2] and len(client.models_fake.requests) == 3
    assert client.models_fake.timeouts[0] == DEFAULT_RELOAD_TIMEOUT  # not the 5 s of other calls
    assert client.models_fake.requests[0] == client.models_fake.requests[2]  # the same config again
    # attempts are bounded: the last UNAVAILABLE is raised with how many were made
    client = client_with([], [down] * 4)
    with pytest.raises(ServerUnavailable, match="after 4 attempts"):
        client.model_status("rec")
    # a refusal is not retried
    refused = FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "not currently available")
    client = client_with([], [refused, status_response((1, 30, ""))])
    with pytest.raises(ServingError, match="FAILED_PRECONDITION"):
        client.model_status("rec")
    assert len(client.models_fake.requests) == 1


def test_the_stub_factory_gets_the_clients_channel_once() -> None:
    channels: list[Any] = []

    def factory(channel: Any) -> Stubs:
        channels.append(channel)
        return Stubs(FakeStub([]), FakeStub([status_response((1, 30, ""))] * 2))

    client = ServingClient("127.0.0.1:1", timeout=5.0, stubs=factory)
    assert channels == []  # nothing made before the first call
    client.model_status("rec")
    client.model_status("rec")
    assert len(channels) == 1 and channels[0] is client._channel


# --------------------------------------------------------------------------------------------
# RecommenderClient: pseudonyms and the serving log, outside ServingClient


def test_recommender_client_hashes_ids_logs_pseudonyms_and_keeps_the_given_id(
    tmp_path: Any,
) -> None:
    import json

    from recflow.privacy import pseudonymise
    from recflow.serving.recommender import RecommenderClient

    key = b"k" * 32
    client = client_with([predict_response(4)], [])
    logs = tmp_path / "requests"
    recommender = RecommenderClient(client, pseudonym_key=key, request_log=logs, clock=lambda: 0.0)
    [rec] = recommender.recommend("rec", ["alice"], k=2)
    [expected] = pseudonymise(["alice"], key)
    assert client.prediction_fake.requests[0].inputs["user_id"].string_val == [expected.encode()]
    assert (rec.user_id, rec.pseudonym, rec.model_version) == ("alice", expected, 4)
    lines = [json.loads(line) for f in sorted(logs.rglob("*")) if f.is_file()
             for line in f.read_text().splitlines()]  # fmt: skip
    assert [(x["model"], x["user_id"]) for x in lines] == [("rec", expected)]
    assert "alice" not in json.dumps(lines)


def test_recommender_client_sends_pseudonyms_as_they_are_and_logs_nothing_without_a_folder() -> (
    None
):
    from recflow.serving.recommender import RecommenderClient

    client = client_with([predict_response(4)], [])
    with RecommenderClient(client) as recommender:
        [rec] = recommender.recommend("rec", ["p_0"], k=1, pseudonymised=True)
    assert client.prediction_fake.requests[0].inputs["user_id"].string_val == [b"p_0"]
    assert (rec.user_id, rec.pseudonym) == ("p_0", "")
    with pytest.raises(InvalidRequest, match="k must be >= 1"):  # refused before any hashing
        RecommenderClient(client_with([], [])).recommend("rec", ["alice"], k=0, pseudonymised=False)
