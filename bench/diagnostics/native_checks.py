"""The checks bench/diagnostics/native_predict.py makes before it measures: the native front
end's answers against the SavedModel's, and what it forwards against the Python server's."""

from __future__ import annotations

import concurrent.futures
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving_latency import MODEL, in_process, make_request  # noqa: E402 (bench/serving_latency.py)

THREADS = (1, -1)  # the local server's session threads (intra, inter), as bench-serving runs it


def _probes(users: list[str]) -> list[tuple[str, str, bytes]]:
    """(what, method, serialized request): requests predictd must pass to the local server."""
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = MODEL
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = MODEL
    metadata.metadata_field.append("signature_def")
    rows = make_request(users[0])
    rows.inputs["user_id"].tensor_shape.dim[0].size = 3
    rows.inputs["user_id"].string_val.extend([u.encode() for u in users[1:3]])
    unknown_model = make_request(users[0])
    unknown_model.model_spec.name = "no_such_model"
    unknown_label = make_request(users[0], label="no_such_label")
    wrong_input = make_request(users[0])
    wrong_input.inputs["user"].CopyFrom(wrong_input.inputs.pop("user_id"))
    too_large = make_request("x" * (5 * 2**20))
    predict = "/tensorflow.serving.PredictionService/Predict"
    return [
        ("GetModelStatus", "/tensorflow.serving.ModelService/GetModelStatus",
         status.SerializeToString()),
        ("GetModelMetadata", "/tensorflow.serving.PredictionService/GetModelMetadata",
         metadata.SerializeToString()),
        ("Predict, 3 users", predict, rows.SerializeToString()),
        ("Predict, unknown model", predict, unknown_model.SerializeToString()),
        ("Predict, unknown label", predict, unknown_label.SerializeToString()),
        ("Predict, wrong input name", predict, wrong_input.SerializeToString()),
        ("Predict, 5 MiB request", predict, too_large.SerializeToString()),
    ]  # fmt: skip


def _ask(address: str, method: str, request: bytes) -> tuple[str, str, bytes]:
    import grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return "OK", "", channel.unary_unary(method)(request, timeout=30)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or "", b""


def _comparable(what: str, answer: bytes) -> Any:
    """An answer as a message; GetModelMetadata's ``Any`` unpacked, so that two servers writing
    a map's entries in different orders give equal answers."""
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

    if what == "GetModelStatus":
        return get_model_status_pb2.GetModelStatusResponse.FromString(answer)
    if what == "GetModelMetadata":
        message = get_model_metadata_pb2.GetModelMetadataResponse.FromString(answer)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        message.metadata["signature_def"].Unpack(signatures)
        return message.model_spec, signatures
    return predict_pb2.PredictResponse.FromString(answer)


def check_forwarded(front: str, local: str, users: list[str]) -> list[dict[str, Any]]:
    """Everything the native front end does not serve itself gets the Python server's own
    answer (status, message and the answer as a message); a request over the receive limit is
    refused by both with the same code (the message is each gRPC build's own)."""
    rows = []
    for what, method, request in _probes(users):
        got, want = _ask(front, method, request), _ask(local, method, request)
        same = (
            got[:2] == want[:2] and _comparable(what, got[2]) == _comparable(what, want[2])
        ) or (what.endswith("MiB request") and got[0] == want[0] != "OK")
        rows.append({"request": what, "local": want[:2], "through_predictd": got[:2],
                     "same": same})  # fmt: skip
        if not same:
            raise SystemExit(f"native_predict: {what}: local {want[:2]}, predictd {got[:2]}")
    return rows


def check_answers(address: str, export: Path, users: list[str]) -> dict[str, Any]:
    """predictd's answers against the in-process SavedModel's: alone, then 64 concurrent."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    model = in_process(export, THREADS)
    sample = users[:64]
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def ask(user: str) -> Any:
            return stub.Predict(make_request(user), timeout=30)

        alone = [ask(u) for u in sample]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            together = list(pool.map(ask, sample))
    worst = 0.0
    for user, *answers in zip(sample, alone, together, strict=True):
        want = model([user])
        for got in answers:
            if list(got.outputs["item_ids"].string_val) != np.ravel(want["item_ids"]).tolist():
                raise SystemExit(f"native_predict: item ids differ for user {user}")
            scores = np.frombuffer(got.outputs["scores"].tensor_content, dtype="<f4")
            worst = max(worst, float(np.abs(scores - np.ravel(want["scores"])).max()))
    if worst > 1e-4:
        raise SystemExit(f"native_predict: scores differ by up to {worst}")
    return {"users": len(sample), "ways": ["one at a time", "64 concurrent"],
            "max_abs_score_difference": worst}  # fmt: skip
