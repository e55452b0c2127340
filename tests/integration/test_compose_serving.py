"""The TF Serving flags of docker-compose.yml, run: recflow-model-server takes the same flags,
the DAG's own promotion code deploys a model through it, and the compose healthcheck probes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from compose_files import (
    active_services,
    flags,
    mounts,
    needs_docker_compose,
    pipeline_config_under,
    serving_service,
    without_gpu_flags,
)

from recflow.serving.server_process import ServerProcess, free_port

pytestmark = needs_docker_compose


@dataclass
class Started:
    server: ServerProcess
    grpc_port: int
    rest_port: int
    remap: dict[str, Path]  # container mount target -> local path

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.server.process is not None
        return self.server.process

    @property
    def log(self) -> Path:
        return self.server.log_file

    def local(self, container_path: str | Path) -> Path:
        return local_path(self.remap, container_path)


def local_path(remap: dict[str, Path], container_path: str | Path) -> Path:
    text = str(container_path)
    for prefix in sorted(remap, key=len, reverse=True):
        if text == prefix or text.startswith(prefix.rstrip("/") + "/"):
            return remap[prefix] / os.path.relpath(text, prefix)
    raise AssertionError(f"{text} is on no mount of the serving service")


def start_from_compose(service: dict[str, Any], tmp: Path) -> Started:
    """recflow-model-server with the service's flags; its mounts become local folders."""
    grpc_port, rest_port = free_port(), free_port()
    remap: dict[str, Path] = {}
    for m in mounts(service):
        # bind mounts: the real repository files; named volumes: an empty folder
        remap[m.target] = Path(m.source) if m.is_bind else tmp / f"volume-{m.source}"
        if not m.is_bind:
            remap[m.target].mkdir(parents=True, exist_ok=True)
    args = []
    for key, value in without_gpu_flags(flags(service)).items():
        if key == "port":
            value = str(grpc_port)
        elif key == "rest_api_port":
            value = str(rest_port)
        elif value.startswith("/"):
            value = str(local_path(remap, value))
        args.append(f"--{key}={value}")
    # What airflow-init writes before TF Serving starts.
    config = local_path(remap, flags(service)["model_config_file"])
    config.write_text("model_config_list {\n}\n", encoding="utf-8")
    server = ServerProcess(
        [sys.executable, "-m", "recflow.serving.server", *args],
        port=grpc_port,
        log_file=tmp / "server.log",
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return Started(server.start(timeout=90), grpc_port, rest_port, remap)


@pytest.fixture()
def compose_server(
    compose_rendered: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[dict, Started]]:
    _, service = serving_service(compose_rendered["gpu"])
    started = start_from_compose(service, tmp_path)
    try:
        yield service, started
    finally:
        started.server.stop()


def test_compose_serving_flags_run_and_the_dag_deploys_through_them(
    compose_server: tuple[dict, Started],
    compose_rendered: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from _savedmodel_fixture import write_savedmodel

    from recflow.errors import ModelNotFound, ServerUnavailable
    from recflow.promotion import Promoter
    from recflow.serving.client import ServingClient

    service, server = compose_server
    worker_env = active_services(compose_rendered["gpu"])["airflow-worker"]["environment"]
    cfg = pipeline_config_under(worker_env, monkeypatch)
    address = f"127.0.0.1:{server.grpc_port}"
    with ServingClient(address, timeout=5) as client:
        # Up, with the empty config airflow-init writes: GetModelStatus answers NOT_FOUND.
        deadline = time.monotonic() + 90
        while True:
            assert server.process.poll() is None, server.log.read_text()
            try:
                client.model_status(cfg.serving.model_name)
                raise AssertionError("a model is served before anything was deployed")
            except ModelNotFound:
                break
            except ServerUnavailable:
                assert time.monotonic() < deadline, server.log.read_text()
                time.sleep(0.5)

        # The DAG's promotion, with its compose paths mapped to this machine.
        saved = write_savedmodel(tmp_path / "export", "compose")
        promoter = Promoter(
            client,
            server.local(cfg.model_config_file),
            cfg.serving.model_name,
            server.local(cfg.model_base_path),
            load_timeout=60,
        )
        promoter.deploy_canary(saved, 1)
        promoter.promote_stable(1)
        status = client.model_status(cfg.serving.model_name)
        assert [(s.version, s.state) for s in status] == [(1, "AVAILABLE")]
        served = client.predict(
            cfg.serving.model_name,
            {"user_id": np.asarray(["u1"], dtype=object)},
            label="stable",
        )
        assert served["titles"].ravel()[0].decode().startswith("compose ")

    # The compose healthcheck, run here against the same REST port.
    test = service["healthcheck"]["test"]
    assert test[:2] == ["CMD", "bash"], test
    probe = [a.replace("/8501 ", f"/{server.rest_port} ") for a in test[2:]]
    assert probe != test[2:], "healthcheck does not probe port 8501"
    ok = subprocess.run(["bash", *probe], capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    wrong = [a.replace(f"/{server.rest_port} ", f"/{free_port()} ") for a in probe]
    assert subprocess.run(["bash", *wrong], capture_output=True, timeout=10).returncode != 0
