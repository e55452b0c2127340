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
from _savedmodel_fixture import publish_version

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
    yield native_predict, f"127.0.0.1:{port}", local.address, base / "1"
    front.kill()
    front.wait()


def test_predictd_answers_as_the_savedmodel_does(predictd_in_front: Any) -> None:
    native_predict, front, _, export = predictd_in_front
    check = native_predict.check_answers(front, export, USERS)
    assert check["users"] == len(USERS)
    assert check["max_abs_score_difference"] <= 1e-6


def test_everything_else_gets_the_local_servers_own_answer(predictd_in_front: Any) -> None:
    native_predict, front, local, _ = predictd_in_front
    rows = native_predict.check_forwarded(front, local, USERS)
    assert all(r["same"] for r in rows)
    refused = {r["request"]: r["through_predictd"][0] for r in rows}
    assert refused["Predict, unknown label"] == "INVALID_ARGUMENT"
    assert refused["Predict, 5 MiB request"] == "RESOURCE_EXHAUSTED"
    assert refused["GetModelStatus"] == "OK"
