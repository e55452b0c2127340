"""recflow-model-server --native_frontend: predictd on the public port, the Python server behind.

What it serves itself must be what the Python server would answer, everything else must get
the Python server's own answer, a reload must change what it serves before the RPC returns,
and what it serves must be in the metrics. make test installs the Debian packages predictd is
built with (Makefile: native-deps).
"""

from __future__ import annotations

import concurrent.futures
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
from _savedmodel_fixture import expected, publish_version

from recflow.serving.model_config import ModelEntry, to_proto, write_entries

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "recommender"
PREDICT = "/tensorflow.serving.PredictionService/Predict"
BATCHING = f"--batching_parameters_file={ROOT / 'serving' / 'batching_parameters.txt'}"


def make_request(user: str | list[str], **spec: Any) -> Any:
    from tensorflow_serving.apis import predict_pb2

    users = [user] if isinstance(user, str) else user
    r = predict_pb2.PredictRequest()
    r.model_spec.name = spec.get("name", MODEL)
    if "version" in spec:
        r.model_spec.version.value = spec["version"]
    elif spec.get("label"):
        r.model_spec.version_label = spec["label"]
    tensor = r.inputs[spec.get("input", "user_id")]
    tensor.dtype = 7  # DT_STRING
    tensor.tensor_shape.dim.add(size=len(users))
    tensor.string_val.extend(u.encode() for u in users)
    return r


def ask(address: str, method: str, request: bytes) -> tuple[str, str, bytes]:
    """(status, message, answer bytes) of one raw call."""
    with grpc.insecure_channel(address) as channel:
        try:
            return "OK", "", channel.unary_unary(method)(request, timeout=30)
        except grpc.RpcError as err:
            return err.code().name, err.details() or "", b""


def titles(address: str, **spec: Any) -> list[str]:
    from tensorflow_serving.apis import predict_pb2

    code, message, raw = ask(address, PREDICT, make_request("u1", **spec).SerializeToString())
    assert code == "OK", (code, message)
    return [
        t.decode() for t in predict_pb2.PredictResponse.FromString(raw).outputs["titles"].string_val
    ]


def _comparable(answer: Any) -> Any:
    """GetModelMetadata's Any holds a serialized map: unpacked, entry order does not count."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    if isinstance(answer, get_model_metadata_pb2.GetModelMetadataResponse):
        signatures = get_model_metadata_pb2.SignatureDefMap()
        answer.metadata["signature_def"].Unpack(signatures)
        return answer.model_spec, signatures
    return answer


@pytest.fixture()
def two_servers(start_server: Any, model_sources: dict[str, Path], tmp_path: Path) -> Any:
    """The same models behind two servers: with the native front end and without."""
    base = tmp_path / "models" / MODEL
    publish_version(model_sources["A"], base, 1)
    publish_version(model_sources["B"], base, 2)
    config = tmp_path / "models.config"
    write_entries(config, [ModelEntry(MODEL, str(base), (1, 2), {"stable": 1})])
    flags = ("--model_config_file", str(config), "--file_system_poll_wait_seconds=0",
             "--allow_version_labels_for_unavailable_models",
             "--enable_batching", BATCHING)  # fmt: skip
    native = start_server(*flags, "--native_frontend")
    python = start_server(*flags)
    assert "Native front end (predictd)" in native.log_text()
    return native.address, python.address


def test_what_it_serves_itself_is_the_python_servers_answer(two_servers: Any) -> None:
    from tensorflow_serving.apis import predict_pb2

    native, python = two_servers
    requests = [make_request(u, **spec) for u in ("u1", "u2", "nobody")
                for spec in ({"label": "stable"}, {"version": 2}, {})]  # fmt: skip
    for r in requests:
        answers = [ask(a, PREDICT, r.SerializeToString()) for a in (native, python)]
        assert [a[0] for a in answers] == ["OK", "OK"]
        parsed = [predict_pb2.PredictResponse.FromString(a[2]) for a in answers]
        assert parsed[0] == parsed[1]  # map entries may be serialized in another order
    assert titles(native, label="stable") == [t for _, t in expected("A", "u1")]
    assert titles(native) == [t for _, t in expected("B", "u1")]  # no version: the latest

    # 64 at once: merged into batches natively, each answer still its own user's.
    users = [("u1", "u2", "nobody")[i % 3] for i in range(64)]
    raw = [make_request(u, label="stable").SerializeToString() for u in users]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda r: ask(native, PREDICT, r), raw))
    want = {u: ask(python, PREDICT, r)[2] for u, r in zip(users, raw, strict=True)}
    for user, answer in zip(users, got, strict=True):
        assert answer[0] == "OK"
        assert predict_pb2.PredictResponse.FromString(answer[2]) == (
            predict_pb2.PredictResponse.FromString(want[user])
        )


def test_everything_else_gets_the_python_servers_own_answer(two_servers: Any) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

    native, python = two_servers
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = MODEL
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = MODEL
    metadata.metadata_field.append("signature_def")
    probes = {
        "status": ("/tensorflow.serving.ModelService/GetModelStatus", status),
        "metadata": ("/tensorflow.serving.PredictionService/GetModelMetadata", metadata),
        "three users": (PREDICT, make_request(["u1", "u2", "nobody"], label="stable")),
        "unknown label": (PREDICT, make_request("u1", label="no_such_label")),
        "unknown model": (PREDICT, make_request("u1", name="no_such_model")),
        "unknown version": (PREDICT, make_request("u1", version=7)),
        "wrong input": (PREDICT, make_request("u1", input="user")),
    }
    answer_types = {"status": get_model_status_pb2.GetModelStatusResponse,
                    "metadata": get_model_metadata_pb2.GetModelMetadataResponse}  # fmt: skip
    for what, (method, message) in probes.items():
        got, want = (ask(a, method, message.SerializeToString()) for a in (native, python))
        assert got[:2] == want[:2], what
        # As messages: two servers may serialize a map's entries in different orders.
        parse = answer_types.get(what, predict_pb2.PredictResponse).FromString
        assert _comparable(parse(got[2])) == _comparable(parse(want[2])), what
    code, message, _ = ask(native, PREDICT, make_request("x" * (5 * 2**20)).SerializeToString())
    assert code == "RESOURCE_EXHAUSTED", message
    assert titles(native, label="stable") == [t for _, t in expected("A", "u1")]  # still serving


def test_a_reload_changes_what_it_serves_before_the_rpc_returns(
    start_server: Any, model_sources: dict[str, Path], tmp_path: Path
) -> None:
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    base = tmp_path / "models" / MODEL
    publish_version(model_sources["A"], base, 1)
    publish_version(model_sources["B"], base, 2)
    config = tmp_path / "models.config"
    entry = ModelEntry(MODEL, str(base), (1, 2), {"stable": 1})
    write_entries(config, [entry])
    server = start_server("--model_config_file", str(config), "--native_frontend",
                          "--file_system_poll_wait_seconds=0",
                          "--allow_version_labels_for_unavailable_models")  # fmt: skip
    a, b = ([t for _, t in expected(tag, "u1")] for tag in ("A", "B"))
    assert titles(server.address, label="stable") == a
    with grpc.insecure_channel(server.address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for version, want in ((2, b), (1, a), (2, b)):
            reload = model_management_pb2.ReloadConfigRequest()
            reload.config.CopyFrom(to_proto([entry.with_label("stable", version)]))
            assert stub.HandleReloadConfigRequest(reload, timeout=60).status.error_code == 0
            assert titles(server.address, label="stable") == want
        # Version 1 unloaded: asked for by number it is the Python server's NOT_FOUND.
        reload = model_management_pb2.ReloadConfigRequest()
        reload.config.CopyFrom(to_proto([entry.with_label("stable", 2).with_versions([2])]))
        assert stub.HandleReloadConfigRequest(reload, timeout=60).status.error_code == 0
    code, message, _ = ask(
        server.address, PREDICT, make_request("u1", version=1).SerializeToString()
    )
    assert (code, message) == ("NOT_FOUND", f"Servable not found for request: Specific({MODEL}, 1)")


def test_natively_served_requests_are_in_the_metrics(
    start_server: Any, model_sources: dict[str, Path], tmp_path: Path
) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from conftest import free_port

    base = tmp_path / "models" / MODEL
    publish_version(model_sources["A"], base, 1)
    config = tmp_path / "models.config"
    write_entries(config, [ModelEntry(MODEL, str(base), (1,), {"stable": 1})])
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    rest = free_port()
    server = start_server("--model_config_file", str(config), "--native_frontend",
                          "--allow_version_labels_for_unavailable_models",
                          "--enable_batching", BATCHING, f"--rest_api_port={rest}",
                          f"--monitoring_config_file={monitoring}")  # fmt: skip
    for _ in range(5):
        titles(server.address, label="stable")  # natively
    ask(server.address, PREDICT, make_request(["u1", "u2"], label="no_such").SerializeToString())

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{rest}/metrics", timeout=10).read()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
        }

    first = samples()
    ok = (":tensorflow:serving:request_count_total",
          (("api", "Predict"), ("model_name", MODEL), ("status", "OK")))  # fmt: skip
    refused = (":tensorflow:serving:request_count_total",
               (("api", "Predict"), ("model_name", MODEL), ("status", "INVALID_ARGUMENT")))  # fmt: skip
    latency = (":tensorflow:serving:request_latency_count",
               (("API", "Predict"), ("entrypoint", "GRPC"), ("model_name", MODEL)))  # fmt: skip
    assert first[ok] == 5 and first[refused] == 1  # native and forwarded, each once
    assert first[latency] == 6
    titles(server.address, label="stable")
    assert samples()[ok] == 6  # drained counts add up, none counted twice


def test_a_version_predictd_cannot_load_is_forwarded_never_answered_by_another(
    model_sources: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Backend "-" answers every forwarded request UNIMPLEMENTED, so it shows what was not
    served natively."""
    from recflow.serving.native import NativeFrontend
    from recflow.serving.server.servable import load_servable

    version_1 = load_servable(MODEL, 1, publish_version(model_sources["A"], tmp_path / "m", 1))
    broken = load_servable(MODEL, 2, publish_version(model_sources["B"], tmp_path / "m", 2))
    broken.path = tmp_path / "gone"  # predictd's own load of it fails
    frontend = NativeFrontend("127.0.0.1:0", "-", max_receive_bytes=2**22, batching=None, threads=2)
    frontend.start()
    try:
        with caplog.at_level(logging.WARNING, logger="recflow.serving.native"):
            frontend.publish([version_1, broken], {MODEL: {"stable": 1, "canary": 2}})
        address = f"127.0.0.1:{frontend.listen()}"
        assert "version 2 of recommender is served by the backend only" in caplog.text
        assert titles(address, version=1) == [t for _, t in expected("A", "u1")]
        assert titles(address, label="stable") == [t for _, t in expected("A", "u1")]
        for spec in ({"version": 2}, {"label": "canary"}, {}):  # {}: the latest is version 2
            request = make_request("u1", **spec).SerializeToString()
            assert ask(address, PREDICT, request)[0] == "UNIMPLEMENTED", spec
    finally:
        frontend.stop()
