"""The seam between the pipeline and the experiment tracker / model registry.

``make_registry(tracking_uri, artifact_root)`` gives an :class:`MlflowRegistry` (``sqlite:///``,
``postgresql://``, ``http(s)://`` URIs) or, for ``memory:`` URIs, an :class:`InMemoryRegistry`
(one process only: for unit tests). Importing this package does not import mlflow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from recflow.registry.base import (
    TAG_DAG_RUN_ID,
    TAG_GIT_COMMIT,
    TAG_RECFLOW_VERSION,
    DatasetRef,
    ModelVersionInfo,
    Registry,
    RunInfo,
    code_version,
    resume_or_start_run,
)
from recflow.registry.memory import InMemoryRegistry
from recflow.registry.mlflow_registry import MlflowRegistry

__all__ = [
    "TAG_DAG_RUN_ID",
    "TAG_GIT_COMMIT",
    "TAG_RECFLOW_VERSION",
    "DatasetRef",
    "InMemoryRegistry",
    "MlflowRegistry",
    "ModelVersionInfo",
    "Registry",
    "RunInfo",
    "code_version",
    "make_registry",
    "resume_or_start_run",
]


def make_registry(tracking_uri: str, artifact_root: Path | None = None) -> Registry:
    """The registry behind ``tracking_uri``; ``memory:`` gives a fresh in-process one."""
    if tracking_uri.startswith("memory:"):
        root = artifact_root or Path(tempfile.mkdtemp(prefix="recflow-registry-"))
        return InMemoryRegistry(root)
    return MlflowRegistry(tracking_uri, artifact_root)
