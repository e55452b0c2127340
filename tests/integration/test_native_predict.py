"""bench/diagnostics/native_predict: predictd, built here, in front of the real local server.

The diagnostic's figures rest on two claims this test checks on a small model: what predictd
answers itself equals the SavedModel's own answer (one at a time and in merged batches), and
what it forwards gets the local server's answer unchanged. make test installs the Debian
packages it builds with (Makefile: system-deps).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from _savedmodel_fixture import expected, publish_version

from recflow.serving.model_config import ModelEntry, write_entries
from recflow.serving.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "diagnostics"))

pytestmark = pytest.mark.integration

USERS = ["u1", "u2", "nobody"]


@pytest.fixture()
def predictd_in_front(start_server: Any, model_sources: dict[str, Path], tmp_path: Path) -> Any:
    import native_predict

    if shutil.which("protoc-c") is None or not Path("/usr/include/grpc/grpc.h").exists():
        pytest.skip("protoc-c or gRPC's C headers missing: `make system-deps` installs them")
    binary = native_predict.build(tmp_path / "build")
    base = tmp_path / "models" / native_predict.MODEL
    publish_version(model_sources["A"], base, 1)
    config = tmp_path / "models.config"
    write_entries(config, [ModelEntry(native_predict.MODEL, str(base), (1,), {"stable": 1})])
    local = start_server(
        "--model_config_file", str(config), "--allow_version_labels_for_unavailable_models=true",
        "--enable_batching",
        f"--batching_parameters_file={ROOT / 'serving' / 'batching_parameters.txt'}",
    )  # fmt: skip
    port = free_port()
    front = native_predict.start_native(
        binary, base / "1", port, tmp_path / "predictd.log", 2, local.address
    )
    yield native_predict, f"127.0.0.1:{port}", local.address, base / "1", front
    front.kill()
    front.wait()


def test_predictd_answers_as_the_savedmodel_does(predictd_in_front: Any) -> None:
    import native_checks

    native_predict, front, _, export, _ = predictd_in_front
    check = native_checks.check_answers(front, export, USERS)
    assert check["users"] == len(USERS)
    assert check["max_abs_score_difference"] <= 1e-6


def test_everything_else_gets_the_local_servers_own_answer(predictd_in_front: Any) -> None:
    import native_checks

    native_predict, front, local, _, _ = predictd_in_front
    rows = native_checks.check_forwarded(front, local, USERS)
    assert all(r["same"] for r in rows)
    refused = {r["request"]: r["through_predictd"][0] for r in rows}
    assert refused["Predict, unknown label"] == "INVALID_ARGUMENT"
    assert refused["Predict, 5 MiB request"] == "RESOURCE_EXHAUSTED"
    assert refused["GetModelStatus"] == "OK"


def test_a_new_table_changes_what_is_served_natively_at_once(
    predictd_in_front: Any, model_sources: dict[str, Path], tmp_path: Path
) -> None:
    import grpc
    import native_checks
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    native_predict, front, local, export_a, process = predictd_in_front
    export_b = publish_version(model_sources["B"], tmp_path / "other", 2)

    def request(label: str | None = None, version: int | None = None) -> Any:
        message = native_checks.make_request("u1", label=label or "")
        message.model_spec.ClearField("version_label")
        if label is not None:
            message.model_spec.version_label = label
        if version is not None:
            message.model_spec.version.value = version
        return message

    def titles(label: str | None = None, version: int | None = None) -> list[str]:
        with grpc.insecure_channel(front) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            answer = stub.Predict(request(label, version), timeout=30)
        return [t.decode() for t in answer.outputs["titles"].string_val]

    model = native_predict.MODEL
    both = [(model, 1, export_a), (model, 2, export_b)]
    assert native_predict.publish(process, both, {(model, "stable"): 1}) == "ok 2 1"
    assert titles("stable") == [t for _, t in expected("A", "u1")]
    assert titles() == [t for _, t in expected("B", "u1")]  # no version: the latest
    assert titles(version=1) == [t for _, t in expected("A", "u1")]

    assert native_predict.publish(process, both, {(model, "stable"): 2}) == "ok 2 1"
    assert titles("stable") == [t for _, t in expected("B", "u1")]

    missing = tmp_path / "no-such-savedmodel"
    line = f"servable\t{model}\t3\t{missing}\tuser_id=x:0\titem_ids=y:0"
    refused = native_predict.commit(process, [line])
    assert refused.startswith("error loading") and "no-such-savedmodel" in refused
    assert titles("stable") == [t for _, t in expected("B", "u1")]  # the old table still serves

    # Dropped from the table: the local server behind (version 1 only) answers version 2.
    assert native_predict.publish(process, both[:1], {(model, "stable"): 1}) == "ok 1 1"
    method = "/tensorflow.serving.PredictionService/Predict"
    forwarded = request(version=2).SerializeToString()
    assert native_checks._ask(front, method, forwarded) == native_checks._ask(
        local, method, forwarded
    )
    # Served natively again from version 1: the same answer as the local server's (a map's
    # entries may be serialized in another order, so compared as messages).
    from tensorflow_serving.apis import predict_pb2

    served = request("stable").SerializeToString()
    answers = [native_checks._ask(a, method, served) for a in (front, local)]
    assert [a[0] for a in answers] == ["OK", "OK"]
    parsed = [predict_pb2.PredictResponse.FromString(a[2]) for a in answers]
    assert parsed[0] == parsed[1]
