"""recflow-model-server in a subprocess, driven with TF Serving's own (unmodified) gRPC stubs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from _savedmodel_fixture import K, expected, publish_version

from recflow.errors import InvalidRequest, ModelNotFound, ModelNotReady, ServingError
from recflow.serving.cli import main as cli_main
from recflow.serving.client import ServingClient
from recflow.serving.model_config import EMPTY_MODEL_CONFIG, ModelEntry, write_entries
from recflow.serving.server import allocator

MODEL = "recommender"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tf() -> Any:
    import tensorflow

    return tensorflow


@pytest.fixture(scope="module")
def apis() -> Any:
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    class Apis:
        pass

    ns = Apis()
    for mod in (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    ):
        setattr(ns, mod.__name__.rsplit(".", 1)[-1], mod)
    return ns


def stubs(apis: Any, address: str) -> tuple[Any, Any, grpc.Channel]:
    channel = grpc.insecure_channel(address)
    return (
        apis.prediction_service_pb2_grpc.PredictionServiceStub(channel),
        apis.model_service_pb2_grpc.ModelServiceStub(channel),
        channel,
    )


def predict_request(apis: Any, tf: Any, users: list[str], **spec: Any) -> Any:
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", MODEL)
    if "version" in spec:
        request.model_spec.version.value = spec.pop("version")
    if "label" in spec:
        request.model_spec.version_label = spec.pop("label")
    request.model_spec.signature_name = spec.pop("signature", "serving_default")
    request.inputs[spec.pop("input", "user_id")].CopyFrom(
        tf.make_tensor_proto(users, dtype=spec.pop("dtype", tf.string))
    )
    request.output_filter.extend(spec.pop("output_filter", []))
    assert not spec, spec
    return request


def titles(tf: Any, response: Any, row: int = 0) -> list[str]:
    return [t.decode() for t in tf.make_ndarray(response.outputs["titles"])[row]]


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def test_server_started_as_a_program_runs_on_jemalloc(start_server: Any, tmp_path: Path) -> None:
    """It re-executes itself with jemalloc preloaded (same pid); --malloc=system does not."""
    if allocator.find_jemalloc() is None:
        pytest.skip("libjemalloc2 is not installed (make system-deps installs it as root)")
    config = tmp_path / "empty.config"
    config.write_text(EMPTY_MODEL_CONFIG)
    for flags, expect in (((), "jemalloc"), (("--malloc=system",), "glibc malloc")):
        server = start_server("--model_config_file", str(config), *flags)
        assert server.process is not None
        mapped = allocator.JEMALLOC in Path(f"/proc/{server.process.pid}/maps").read_text()
        assert mapped == (expect == "jemalloc")
        assert f"memory allocator: {expect}" in server.log_text()
        server.stop()


def test_server_started_as_a_program_runs_without_onednn_unless_asked(
    start_server: Any, tmp_path: Path
) -> None:
    """oneDNN's per-shape caches grew the server's memory (onednn.py): off by default."""
    config = tmp_path / "empty.config"
    config.write_text(EMPTY_MODEL_CONFIG)
    for flags, expect in (((), "off"), (("--onednn=on",), "on")):
        server = start_server("--model_config_file", str(config), *flags)
        assert f"TensorFlow oneDNN custom ops: {expect}" in server.log_text()
        server.stop()


def test_thread_flags_follow_tf_servings_rule(
    start_server: Any, model_sources: dict[str, Path], tmp_path: Path, tf: Any, apis: Any
) -> None:
    """A negative inter-op count runs each batch's ops in the batch's own thread (TensorFlow's
    ConfigProto); TF Serving passes the two thread flags to the session only when one is
    positive, so ``-1`` alone is ignored there, and here with a warning saying so."""
    base = tmp_path / "models" / MODEL
    publish_version(model_sources["A"], base, 1)
    config = tmp_path / "models.config"
    write_entries(config, [ModelEntry(MODEL, str(base), (1,), {})])
    for flags, ignored in (
        (("--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=-1"), False),
        (("--tensorflow_inter_op_parallelism=-1",), True),
    ):
        server = start_server("--model_config_file", str(config), "--enable_batching", *flags)
        predict, _, channel = stubs(apis, server.address)
        response = predict.Predict(predict_request(apis, tf, ["u1", "x"]), timeout=10)
        assert titles(tf, response) == [t for _, t in expected("A", "u1")]
        assert titles(tf, response, 1) == [t for _, t in expected("A", "x")]
        channel.close()
        assert ("--tensorflow_inter_op_parallelism=-1 is ignored" in server.log_text()) == ignored
        server.stop()


def test_predict_status_metadata_errors_client_and_cli(
    start_server: Any,
    model_sources: dict[str, Path],
    tmp_path: Path,
    tf: Any,
    apis: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = tmp_path / "models" / MODEL
    publish_version(model_sources["A"], base, 1)
    publish_version(model_sources["B"], base, 2)
    config = tmp_path / "models.config"
    write_entries(config, [ModelEntry(MODEL, str(base), (1, 2), {"stable": 1, "canary": 2})])
    server = start_server(
        "--model_config_file", str(config), "--allow_version_labels_for_unavailable_models"
    )
    predict, models, channel = stubs(apis, server.address)

    # by label, by version, and latest
    by_label = predict.Predict(predict_request(apis, tf, ["u1", "x"], label="stable"), timeout=10)
    assert by_label.model_spec.version.value == 1
    assert by_label.model_spec.signature_name == "serving_default"
    assert titles(tf, by_label) == [t for _, t in expected("A", "u1")]
    assert titles(tf, by_label, 1) == [t for _, t in expected("A", "x")]
    assert tf.make_ndarray(by_label.outputs["scores"]).shape == (2, K)
    by_version = predict.Predict(predict_request(apis, tf, ["u2"], version=2), timeout=10)
    assert by_version.model_spec.version.value == 2
    assert titles(tf, by_version) == [t for _, t in expected("B", "u2")]
    latest = predict.Predict(predict_request(apis, tf, ["u2"]), timeout=10)
    assert latest.model_spec.version.value == 2
    filtered = predict.Predict(
        predict_request(apis, tf, ["u1"], version=1, output_filter=["titles"]), timeout=10
    )
    assert set(filtered.outputs) == {"titles"}

    # status and metadata
    status = models.GetModelStatus(
        apis.get_model_status_pb2.GetModelStatusRequest(model_spec={"name": MODEL}), timeout=10
    )
    states = {s.version: s.state for s in status.model_version_status}
    available = apis.get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert states == {1: available, 2: available}
    meta_request = apis.get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": MODEL, "version": {"value": 1}}, metadata_field=["signature_def"]
    )
    meta = predict.GetModelMetadata(meta_request, timeout=10)
    sigs = apis.get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(sigs)
    assert "serving_default" in sigs.signature_def
    assert set(sigs.signature_def["serving_default"].inputs) == {"user_id"}
    assert set(sigs.signature_def["serving_default"].outputs) == {"item_ids", "scores", "titles"}

    # errors, with TF Serving's codes and messages
    err = rpc_error(predict.Predict, predict_request(apis, tf, ["u1"], name="nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "Servable not found for request: Latest(nope)" in err.details()
    err = rpc_error(predict.Predict, predict_request(apis, tf, ["u1"], version=7))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert f"Specific({MODEL}, 7)" in err.details()
    err = rpc_error(predict.Predict, predict_request(apis, tf, ["u1"], label="gold"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: gold" in err.details()
    err = rpc_error(predict.Predict, predict_request(apis, tf, ["u1"], input="user"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input tensor alias not found in signature: user." in err.details()
    err = rpc_error(predict.Predict, predict_request(apis, tf, [1.5], dtype=tf.float32))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "to be string but float32 is provided" in err.details()
    err = rpc_error(predict.Predict, predict_request(apis, tf, ["u1"], signature="explain"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert 'Serving signature key "explain" not found' in err.details()
    err = rpc_error(
        models.GetModelStatus,
        apis.get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "nope"}),
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "Could not find any versions of model nope" in err.details()
    channel.close()

    # the client
    with ServingClient(server.address, timeout=10) as client:
        [rec] = client.recommend(MODEL, ["u2"], k=2, label="canary")
        assert rec.model_version == 2
        assert [(i, t) for i, t, _ in rec.items] == expected("B", "u2")[:2]
        assert rec.items[0][2] >= rec.items[1][2]
        out = client.predict(MODEL, {"user_id": np.array(["u1"], dtype=object)}, version=1)
        assert out["item_ids"].shape == (1, K)
        assert [v.state for v in client.model_status(MODEL)] == ["AVAILABLE", "AVAILABLE"]
        assert client.metadata(MODEL, 1)["signatures"]["serving_default"]["inputs"] == {
            "user_id": ("DT_STRING", (-1,))
        }
        with pytest.raises(InvalidRequest, match=f"k=9 is larger than the {K}"):
            client.recommend(MODEL, ["u1"], k=9)
        with pytest.raises(ModelNotFound, match="Servable not found"):
            client.recommend("nope", ["u1"], version=1)
        with pytest.raises(ModelNotFound, match="Unrecognized servable version label: gold"):
            client.recommend(MODEL, ["u1"], label="gold")
        with pytest.raises(InvalidRequest, match="Missing but required: {user_id}"):
            client.predict(MODEL, {"user": np.array(["u1"]), "x": np.array([1])})

    # the CLI, as a user runs it; the fixture model knows raw ids, so they go as they are
    cli = [sys.executable, "-m", "recflow.serving.cli", "--pseudonymised"]
    done = subprocess.run(
        [*cli, "--user", "u1", "-k", "3", "--server", server.address, "--model", MODEL],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for _, title in expected("A", "u1"):
        assert title in done.stdout
    assert "version 1" in done.stdout
    # the other commands in-process (same code path, without another tensorflow import)
    assert cli_main(["status", "--server", server.address, "--model", MODEL]) == 0
    assert capsys.readouterr().out.count("AVAILABLE") == 2
    assert (
        cli_main(["--pseudonymised", "--user", "u1", "-k", "99", "--server", server.address]) == 1
    )
    assert "k=99 is larger" in capsys.readouterr().err
    assert (
        cli_main(["--pseudonymised", "--user", "u1", "--server", "127.0.0.1:1", "--timeout", "2"])
        == 1
    )
    assert "make serve" in capsys.readouterr().err


def test_rollout_polling_reload_and_labels(
    start_server: Any, model_sources: dict[str, Path], tmp_path: Path, tf: Any, apis: Any
) -> None:
    base = tmp_path / "models" / MODEL
    publish_version(model_sources["A"], base, 1)
    config = tmp_path / "models.config"
    entry = ModelEntry(MODEL, str(base), (1, 2), {"stable": 1})  # 2 listed, not on disk yet
    write_entries(config, [entry])
    server = start_server(
        "--model_config_file", str(config),
        "--file_system_poll_wait_seconds", "0.2",
        "--model_config_file_poll_wait_seconds", "0.5",
        "--allow_version_labels_for_unavailable_models",
    )  # fmt: skip
    client = ServingClient(server.address, timeout=10)
    assert [tuple(v) for v in client.model_status(MODEL)] == [(1, "AVAILABLE", None)]

    # a scratch folder is ignored; the renamed version directory is picked up by polling
    (base / ".2.tmp-partial").mkdir()
    (base / ".2.tmp-partial" / "saved_model.pb").write_bytes(b"half written")
    publish_version(model_sources["B"], base, 2)
    client.wait_until_available(MODEL, 2, timeout=20, poll=0.2)

    # keep asking for "stable" during every swap below: no request may fail
    failures: list[str] = []
    served: set[int] = set()
    answers = [0]  # requests the hammer has finished; the test waits on counts, not time
    answered = threading.Condition()
    stop = threading.Event()

    def hammer() -> None:
        with ServingClient(server.address, timeout=10) as c:
            while not stop.is_set():
                try:
                    served.add(c.recommend(MODEL, ["u1"], k=1)[0].model_version)
                except ServingError as exc:
                    failures.append(str(exc))
                with answered:
                    answers[0] += 1
                    answered.notify_all()

    def after_answers(n: int) -> None:
        """Return once the hammer has finished ``n`` more requests (the timeout only bounds a
        hang; it decides nothing)."""
        with answered:
            target = answers[0] + n
            assert answered.wait_for(lambda: answers[0] >= target, timeout=60), "hammer stuck"

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        after_answers(5)  # the hammer runs before the first swap
        # version 3 is on disk but a label cannot point at it before it is loaded
        publish_version(model_sources["B"], base, 3)
        with pytest.raises(ServingError, match="which is not currently available"):
            client.reload_config([entry.add_version(3).with_label("stable", 3)])
        assert client.recommend(MODEL, ["u1"], k=1)[0].model_version == 1  # old config in force
        with pytest.raises(ModelNotFound):
            client.predict(MODEL, {"user_id": np.array(["u1"], dtype=object)}, version=3)

        # the two-step move: serve 1, 2, 3 first, then move stable and drop 1
        client.reload_config([entry.add_version(3)])
        assert client.model_status(MODEL, 3)[0].state == "AVAILABLE"  # loaded before answer
        client.reload_config([entry.add_version(3).with_label("stable", 3).remove_version(1)])
        assert client.recommend(MODEL, ["u1"], k=1)[0].model_version == 3
        assert client.model_status(MODEL, 1)[0].state == "END"
        after_answers(20)  # the hammer keeps asking after the last swap
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert served >= {1, 3}

    # a config file write is applied by polling
    write_entries(config, [ModelEntry(MODEL, str(base), (2, 3), {"stable": 2})])
    deadline = time.monotonic() + 60  # bounds a hang; the poll interval is 0.5 s
    while client.recommend(MODEL, ["u1"], k=1)[0].model_version != 2:
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.2)

    # a version that cannot load ends in END with its error, and the client says so
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    publish_version(broken, base, 4)
    write_entries(config, [ModelEntry(MODEL, str(base), (2, 3, 4), {"stable": 2})])
    with pytest.raises(ModelNotReady, match="failed to load"):
        client.wait_until_available(MODEL, 4, timeout=20, poll=0.2)
    [row] = client.model_status(MODEL, 4)
    assert row.state == "END" and row.error
    assert client.recommend(MODEL, ["u1"], k=1)[0].model_version == 2
    client.close()
    assert "Loading servable: {name: recommender version: 4}" in server.log_text()
