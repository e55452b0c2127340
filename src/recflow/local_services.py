"""Start and stop the local model server as a subprocess (demo, tests, `make serve`)."""

from __future__ import annotations

# The helper lives with the serving code (infra validation and tests use it too).
from recflow.serving.server_process import (
    EMPTY_MODEL_CONFIG,
    ModelServerProcess,
    free_port,
    port_open,
)

__all__ = ["EMPTY_MODEL_CONFIG", "ModelServerProcess", "free_port", "port_open"]
