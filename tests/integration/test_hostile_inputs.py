"""Hostile input against recflow-model-server (issue 13, item 6): loopback only, bounded count
and time. After every case the champion (label `stable`) still answers correctly and the
server's RSS stays within RSS_BOUND_MB of its warmed-up level.

The server runs with the shipped CPU batching file (max_batch_size 64), a monitoring config and
the default limits (gRPC's 4 MiB receive limit), once as it is and once with its native front
end (predictd answers the one-id Predicts; everything else passes through it).
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from _savedmodel_fixture import expected, publish_version

from recflow.serving.model_config import ModelEntry, to_proto, write_entries

MODEL = "recommender"
ROOT = Path(__file__).resolve().parents[2]
FORGED = 'evil"} 1\nfake_metric{a="b'
# The stated bound: one request raises the server's RSS by at most this much (bench/soak.py
# measured 82 MB for the largest allowed request on the MovieLens-100K-size model; the tiny
# model here needs far less, the bound is the same).
RSS_BOUND_MB = 100.0


def rss_mb(pid: int) -> float:
    """RSS of the server and its children (the native front end runs as one)."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]  # fmt: skip
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024 + sum(rss_mb(c) for c in children)
    raise AssertionError("no VmRSS in /proc status")


def request(users: list[Any], **spec: Any) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    r = predict_pb2.PredictRequest()
    r.model_spec.name = spec.pop("name", MODEL)
    r.model_spec.signature_name = spec.pop("signature", "serving_default")
    if "version" in spec:
        r.model_spec.version.value = spec.pop("version")
    elif spec.get("label", "stable") is not None:
        r.model_spec.version_label = spec.pop("label", "stable")
    spec.pop("label", None)  # label=None: the latest version
    r.inputs[spec.pop("input", "user_id")].CopyFrom(
        tf.make_tensor_proto(users, dtype=spec.pop("dtype", tf.string))
    )
    assert not spec, spec
    return r


class Harness:
    def __init__(self, server: Any, rest_port: int, config: Any) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.server = server
        self.pid = server.process.pid
        self.rest_port = rest_port
        self.config = config
        self.channel = grpc.insecure_channel(server.address)
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel).Predict
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.baseline = 0.0
        self.peak_growth = 0.0

    def refused(self, req: Any, code: grpc.StatusCode, *words: str) -> str:
        with pytest.raises(grpc.RpcError) as info:
            self.predict(req, timeout=10)
        err = info.value
        assert err.code() == code, (err.code(), err.details())
        for w in words:
            assert w in (err.details() or ""), err.details()
        return str(err.details())

    def champion_answers(self) -> None:
        import tensorflow as tf

        response = self.predict(request(["u1", "nobody"]), timeout=10)
        assert response.model_spec.version.value == 1
        got = [t.decode() for t in tf.make_ndarray(response.outputs["titles"])[0]]
        assert got == [t for _, t in expected("A", "u1")]
        growth = rss_mb(self.pid) - self.baseline
        self.peak_growth = max(self.peak_growth, growth)
        assert growth <= RSS_BOUND_MB, f"RSS grew {growth:.1f} MB over the warmed-up level"

    def metrics(self) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.rest_port}/monitoring/prometheus/metrics"
        return str(urllib.request.urlopen(url, timeout=10).read().decode())


def warm_up(h: Harness) -> None:
    """Every path a well-formed request takes, up to the largest allowed request."""
    for rows in (1, 8, 64):
        h.predict(request(["u1"] * rows), timeout=10)


@pytest.fixture(params=[False, True], ids=["python", "native_frontend"])
def harness(
    request: pytest.FixtureRequest,
    start_server: Any,
    model_sources: dict[str, Path],
    tmp_path: Path,
) -> Any:
    from conftest import free_port

    base = tmp_path / "models" / MODEL
    publish_version(model_sources["A"], base, 1)
    publish_version(model_sources["B"], base, 2)
    config = tmp_path / "models.config"
    entries = [ModelEntry(MODEL, str(base), (1, 2), {"stable": 1, "canary": 2})]
    write_entries(config, entries)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }'
    )
    rest_port = free_port()
    server = start_server(
        "--model_config_file", str(config), "--allow_version_labels_for_unavailable_models",
        "--enable_batching", f"--batching_parameters_file={ROOT / 'serving' / 'batching_parameters.txt'}",
        f"--rest_api_port={rest_port}", f"--monitoring_config_file={monitoring}",
        "--file_system_poll_wait_seconds=0", *(["--native_frontend"] if request.param else []),
    )  # fmt: skip
    h = Harness(server, rest_port, to_proto(entries))
    warm_up(h)
    h.baseline = rss_mb(h.pid)
    h.champion_answers()
    yield h
    h.channel.close()


def test_malformed_requests_are_refused_by_name_and_the_champion_keeps_answering(
    harness: Harness,
) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    h = harness
    empty = predict_pb2.PredictRequest()
    empty.model_spec.name = MODEL
    h.refused(empty, grpc.StatusCode.INVALID_ARGUMENT, "input size does not match signature")
    h.champion_answers()

    started = time.perf_counter()
    message = h.refused(
        request([f"u{i}" for i in range(100_000)]), grpc.StatusCode.INVALID_ARGUMENT,
        "Task size 100000 is larger than maximum input batch size 64", "batching_parameters.txt",
    )  # fmt: skip
    print(f"100,000-id Predict refused in {(time.perf_counter() - started) * 1e3:.1f} ms "
          f"(client-side, incl. serialization): {message}")  # fmt: skip
    h.champion_answers()
    # Refused requests must not be kept alive (the abort once held each 100,000-id request:
    # +47 MB per 30 refusals measured on this machine before the fix).
    huge = request([f"u{i}" for i in range(100_000)]).SerializeToString()
    raw = h.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    before = rss_mb(h.pid)
    for _ in range(30):
        with pytest.raises(grpc.RpcError):
            raw(huge, timeout=10)
    assert rss_mb(h.pid) - before < 16.0, "refused requests are being retained"
    h.champion_answers()
    h.refused(request(["u1"] * 65), grpc.StatusCode.INVALID_ARGUMENT, "maximum input batch size 64")
    h.champion_answers()

    # One 5 MB id: above gRPC's 4 MiB receive limit, refused before it is parsed.
    h.refused(request(["x" * (5 * 1024 * 1024)]), grpc.StatusCode.RESOURCE_EXHAUSTED, "4194304")
    h.champion_answers()

    h.refused(
        request([1.0, 2.0], dtype=tf.float32), grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be string but float32 is provided",
    )  # fmt: skip
    for users, shape in (([["u1", "u2"]], "[1, 2]"), ("u1", "[]")):
        h.refused(
            request(users), grpc.StatusCode.INVALID_ARGUMENT, "'user_id'",
            "expected shape [-1] (-1: any size)", f"received shape {shape}",
        )  # fmt: skip
        h.champion_answers()
    h.refused(request(["u1"], input="user"), grpc.StatusCode.INVALID_ARGUMENT, "alias not found")
    # Shape [10^9] with one value: TensorFlow would repeat it a billion times.
    broadcast = request(["u1"])
    broadcast.inputs["user_id"].tensor_shape.dim[0].size = 10**9
    h.refused(broadcast, grpc.StatusCode.INVALID_ARGUMENT, "Task size 1000000000")
    h.champion_answers()

    # Odd but well-formed ids: answered with the "unknown user" row.
    response = h.predict(request([b"\xff\xfe\x00", "ユーザー😀", ""]), timeout=10)
    titles = [[t.decode() for t in row] for row in tf.make_ndarray(response.outputs["titles"])]
    assert titles == [[t for _, t in expected("A", "nobody")]] * 3
    zero = h.predict(request(tf.constant([], dtype=tf.string)), timeout=10)
    assert tf.make_ndarray(zero.outputs["titles"]).shape[0] == 0
    h.champion_answers()

    # Bytes that are no PredictRequest at all.
    raw = h.channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=None,
        response_deserializer=None,
    )
    for garbage in (b"\xff" * 64, bytes(range(256)) * 4, b"\x0a\xff\xff\xff\xff\x0f"):
        with pytest.raises(grpc.RpcError) as info:
            raw(garbage, timeout=10)
        assert info.value.code() != grpc.StatusCode.OK
        h.champion_answers()


def listening_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(socket.inet_ntop(
                    socket.AF_INET if len(address) == 8 else socket.AF_INET6,
                    bytes.fromhex(address)[::-1] if len(address) == 8 else
                    b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8)),
                ))  # fmt: skip
    # gRPC binds an IPv4 address as an IPv6 socket on its v4-mapped form (still loopback only).
    return {a.removeprefix("::ffff:") for a in found}


def test_unknown_names_and_forged_metric_labels(harness: Harness) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    h = harness
    # Loopback only, gRPC and metrics alike (no --bind_address given).
    grpc_port = int(h.server.address.rsplit(":", 1)[1])
    assert listening_addresses(grpc_port) == {"127.0.0.1"}
    assert listening_addresses(h.rest_port) == {"127.0.0.1"}
    assert "Running gRPC ModelServer at 127.0.0.1:" in h.server.log_text()
    h.refused(request(["u1"], name="nope", label=None), grpc.StatusCode.NOT_FOUND,
              "Servable not found for request: Latest(nope)")  # fmt: skip
    h.refused(request(["u1"], name="モデル😀", label=None), grpc.StatusCode.NOT_FOUND)
    h.refused(request(["u1"], name=FORGED, version=1), grpc.StatusCode.NOT_FOUND)
    h.refused(request(["u1"], signature="nope"), grpc.StatusCode.FAILED_PRECONDITION, '"nope"')
    h.refused(request(["u1"], label="nope"), grpc.StatusCode.INVALID_ARGUMENT, "label: nope")
    h.refused(request(["u1"], version=99), grpc.StatusCode.NOT_FOUND, "Specific(recommender, 99)")
    for i in range(200):  # a flood of made-up names must not mint series
        with pytest.raises(grpc.RpcError):
            h.predict(request(["u1"], name=f"{FORGED}-{i}", label=None), timeout=10)
    h.champion_answers()

    families = list(text_string_to_metric_families(h.metrics()))
    names = {f.name for f in families}
    assert not any("fake" in n for n in names), names
    labels = {s.labels.get("model_name") for f in families for s in f.samples}
    assert labels <= {MODEL, "_other", None}, labels
    counts = {
        (s.labels["model_name"], s.labels["status"]): s.value
        for f in families
        if f.name == ":tensorflow:serving:request_count"
        for s in f.samples
    }
    assert counts[("_other", "NOT_FOUND")] == 203.0
    series = sum(len(f.samples) for f in families)
    assert series < 200, f"{series} samples: the label set is not bounded"


def test_reload_storm_and_disconnecting_clients(harness: Harness, tmp_path: Path) -> None:
    from tensorflow_serving.apis import model_management_pb2

    h = harness
    keep = ModelEntry(MODEL, h.config.model_config_list.config[0].base_path, (1, 2),
                      {"stable": 1, "canary": 2})  # fmt: skip

    def storm(worker: int) -> list[str]:
        outcomes = []
        for i in range(10):
            entries = [keep]
            if i % 3 == 1:  # stable moved to a version not loaded: refused, nothing changes
                entries = [ModelEntry(MODEL, keep.base_path, (1, 2, 7), {"stable": 7, "canary": 2})]
            elif i % 3 == 2:  # made-up models with no files
                entries.append(ModelEntry(f"junk-{worker}-{i}", str(tmp_path / "none"), (1,)))
            req = model_management_pb2.ReloadConfigRequest(config=to_proto(entries))
            try:
                h.models.HandleReloadConfigRequest(req, timeout=60)
                outcomes.append("OK")
            except grpc.RpcError as exc:
                outcomes.append(exc.code().name)
        return outcomes

    stop = threading.Event()
    served: list[str] = []

    def load() -> None:
        while not stop.is_set():
            try:
                h.predict(request(["u1"]), timeout=10)
                served.append("OK")
            except grpc.RpcError as exc:
                served.append(exc.code().name)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = [o for r in pool.map(storm, range(4)) for o in r]
    finally:
        stop.set()
        loader.join(30)
    assert set(results) <= {"OK", "FAILED_PRECONDITION"} and "OK" in results, results
    assert served and set(served) == {"OK"}, sorted(set(served))
    h.models.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=h.config), timeout=60
    )
    h.champion_answers()
    assert "junk-" not in h.metrics()  # made-up models left the config, and the metrics

    # Clients that go away mid-request: cancelled calls, closed channels, a half-open socket.
    for _ in range(20):
        future = h.predict.future(request(["u1"] * 64), timeout=10)
        future.cancel()
    for _ in range(5):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        channel = grpc.insecure_channel(h.server.address)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict.future(request(["u2"] * 64), timeout=10)
        channel.close()
    host, port = h.server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04")  # cut mid-frame
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
    h.champion_answers()
    print(f"peak RSS growth over the warmed-up level: {h.peak_growth:.1f} MB")
