"""Fixtures for tests that run ``recflow-model-server`` in a subprocess on a free port."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _savedmodel_fixture import write_savedmodel  # noqa: E402

from recflow.serving.server_process import (  # noqa: E402
    ServerProcess,
    free_port,
    local_server_argv,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two distinguishable SavedModels ("A" with warmup requests, "B" without)."""
    base = tmp_path_factory.mktemp("savedmodels")
    return {
        "A": write_savedmodel(base / "A", "A", warmup_users=("u1", "nobody")),
        "B": write_savedmodel(base / "B", "B"),
    }


@pytest.fixture()
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start the server with extra flags; every server started is stopped (SIGTERM) after."""
    started: list[ServerProcess] = []

    def start(*flags: str, timeout: float = 60.0) -> ServerProcess:
        port = free_port()
        server = ServerProcess(
            local_server_argv(port, *flags),
            port=port,
            log_file=tmp_path / f"server-{port}.log",
            env={"TF_CPP_MIN_LOG_LEVEL": "2", "DO_NOT_TRACK": "true"},
            cwd=ROOT,
        )
        started.append(server)
        return server.start(timeout)

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def compose_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.env.example with every secret filled in (compose_files.write_env_file)."""
    from compose_files import write_env_file

    return write_env_file(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="session")
def compose_rendered(compose_env_file: Path) -> dict[str, dict[str, Any]]:
    """Each compose variant as `docker-compose config` renders it."""
    from compose_files import render_variants

    return render_variants(compose_env_file)
