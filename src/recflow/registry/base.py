"""The `Registry` protocol, its value types, and the rules both implementations share.

The rules (name checks, param flattening and truncation, dict serialisation) live here so that
`MlflowRegistry` and `InMemoryRegistry` behave identically: a unit test written against the
in-memory one says something true about the MLflow one.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from recflow.errors import RegistryError

if TYPE_CHECKING:
    import pandas as pd

RunStatus = Literal["RUNNING", "FINISHED", "FAILED", "KILLED"]
END_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")

# Tag keys with a meaning across the platform.
TAG_DAG_RUN_ID = "airflow.dag_run_id"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_RECFLOW_VERSION = "recflow.version"
TAG_RUN_NAME = "mlflow.runName"
# A version's registration: created with "pending", set to "complete" as the last step of the
# register task (tags, description and model card written). set_alias refuses a version whose
# tag says otherwise, so a task killed half-way never leaves an aliased, promotable version;
# the re-run finds the same version (same run and source) and completes it. A version without
# the tag was registered before this marker existed (or by a pipeline that does not use it)
# and counts as complete.
TAG_REGISTRATION = "recflow.registration"
REGISTRATION_PENDING = "pending"
REGISTRATION_COMPLETE = "complete"
DATASET_CONTEXT_TAG = "mlflow.data.context"

# MLflow 3.17's limits (mlflow.utils.validation); an integration test checks they still match.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_ALIAS_LENGTH = 255
MAX_DATASET_DIGEST = 36  # MLflow rejects longer dataset digests
TRUNCATION_MARK = "...[truncated]"

_UNSAFE_KEY_CHARS = re.compile(r"[^/\w.\- :]")
_ALIAS_RE = re.compile(r"^[\w\-]+$")
_VERSION_ALIAS_RE = re.compile(r"^[vV]\d+$")


@dataclass(frozen=True)
class DatasetRef:
    """A dataset recorded as an input of a run."""

    name: str
    digest: str
    source: str
    context: str


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    status: str
    artifact_uri: str
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)  # latest value of each key
    tags: Mapping[str, str] = field(default_factory=dict)
    datasets: tuple[DatasetRef, ...] = ()


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: int
    run_id: str
    source: str
    status: str
    description: str
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


@runtime_checkable
class Registry(Protocol):
    """Experiment tracking plus model registry, as the pipeline needs them."""

    # --- runs
    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> str: ...
    def find_run(self, experiment: str, tags: Mapping[str, str]) -> str | None: ...
    def log_params(self, run_id: str, params: Mapping[str, object]) -> None: ...
    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int | None = None
    ) -> None: ...
    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None: ...
    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None: ...
    def log_artifact(
        self, run_id: str, local_file: Path, artifact_path: str | None = None
    ) -> None: ...
    def log_text(self, run_id: str, text: str, artifact_file: str) -> None: ...
    def log_dict(self, run_id: str, obj: object, artifact_file: str) -> None: ...
    def log_dataset(
        self, run_id: str, df: pd.DataFrame, *, name: str, digest: str, source: str, context: str
    ) -> None: ...
    def end_run(self, run_id: str, status: str = "FINISHED") -> None: ...
    def get_run(self, run_id: str) -> RunInfo: ...
    def list_artifacts(self, run_id: str, path: str = "") -> list[str]: ...
    def download_artifacts(self, run_id: str, artifact_path: str, dst: Path) -> Path: ...

    # --- model registry
    def register_version(
        self,
        name: str,
        run_id: str,
        artifact_path: str,
        *,
        tags: Mapping[str, object] | None = None,
        description: str = "",
    ) -> int: ...
    def set_alias(self, name: str, alias: str, version: int) -> None: ...
    def delete_alias(self, name: str, alias: str) -> None: ...
    def get_version_by_alias(self, name: str, alias: str) -> ModelVersionInfo | None: ...
    def get_version(self, name: str, version: int) -> ModelVersionInfo: ...
    def set_version_tag(self, name: str, version: int, key: str, value: object) -> None: ...
    def update_description(self, name: str, version: int, text: str) -> None: ...
    def download_version(self, name: str, version: int, dst: Path) -> Path: ...


def resume_or_start_run(
    registry: Registry,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    *,
    key: str = TAG_DAG_RUN_ID,
) -> str:
    """The run tagged ``key=tags[key]`` if one exists, else a new one.

    One MLflow run per DAG run: a retried task, or a later task, logs into the same run.
    """
    if key not in tags:
        raise RegistryError(
            f"resume_or_start_run: expected tag {key!r} among {sorted(tags)}; "
            f"pass the DAG run id as tags[{key!r}]"
        )
    return registry.find_run(experiment, {key: tags[key]}) or registry.start_run(
        experiment, run_name, tags
    )


# ---------------------------------------------------------------------------------------------
# Shared rules


def check_key(kind: str, key: str) -> str:
    """Make ``key`` acceptable to MLflow the same way in both implementations.

    MLflow allows letters, digits and ``_-. :/`` only, so the project's metric names such as
    ``ndcg@10`` are stored as ``ndcg_at_10`` (other characters become ``_``). Keys that would
    not form a normalised relative path (``../x``, ``a//b``) or are too long are refused.
    """
    if not isinstance(key, str) or not key:
        raise RegistryError(f"{kind} key: expected a non-empty string, found {key!r}")
    safe = _UNSAFE_KEY_CHARS.sub("_", key.replace("@", "_at_"))
    norm = posixpath.normpath(safe)
    if len(safe) > MAX_KEY_LENGTH or norm != safe or norm == "." or norm.startswith(("..", "/")):
        raise RegistryError(
            f"{kind} key {key!r}: expected at most {MAX_KEY_LENGTH} characters forming a "
            "normalised relative path (no '..', '//', leading '/' or trailing '/'); rename it"
        )
    return safe


def check_alias(alias: str) -> str:
    if (
        not isinstance(alias, str)
        or not _ALIAS_RE.match(alias)
        or len(alias) > MAX_ALIAS_LENGTH
        or alias.lower() == "latest"
        or _VERSION_ALIAS_RE.match(alias)
    ):
        raise RegistryError(
            f"alias {alias!r}: expected letters, digits, '_' or '-', not 'latest' and not "
            "of the form v<number> (both reserved by MLflow); use e.g. 'champion'"
        )
    return alias


def registration_complete(tags: Mapping[str, str]) -> bool:
    return tags.get(TAG_REGISTRATION, REGISTRATION_COMPLETE) == REGISTRATION_COMPLETE


def check_complete(info: ModelVersionInfo, action: str) -> None:
    """Raise unless ``info``'s registration completed (see TAG_REGISTRATION)."""
    if not registration_complete(info.tags):
        raise RegistryError(
            f"{action}: {info.name} version {info.version} is not completely registered "
            f"(tag {TAG_REGISTRATION}={info.tags.get(TAG_REGISTRATION)!r}, expected "
            f"{REGISTRATION_COMPLETE!r}): its register task did not finish. Re-run that task "
            "(it completes the same version) or register a new one"
        )


def retry_tags(existing: Mapping[str, str], tags: dict[str, str]) -> dict[str, str]:
    """Tags to apply to a version found again by a retried task: never un-complete it."""
    if registration_complete(existing) and TAG_REGISTRATION in existing:
        return {k: v for k, v in tags.items() if k != TAG_REGISTRATION}
    return tags


def check_status(status: str) -> str:
    if status not in END_STATUSES:
        raise RegistryError(f"end_run: expected status in {END_STATUSES}, found {status!r}")
    return status


def truncate(value: str, limit: int) -> str:
    """Cut ``value`` to ``limit`` characters, visibly, so nobody mistakes it for the full text."""
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def stringify(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def flatten_params(params: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """Nested mappings become dotted keys; values become (possibly truncated) strings."""
    out: dict[str, str] = {}
    for key, value in params.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=f"{full}."))
        else:
            out[check_key("param", full)] = truncate(stringify(value), MAX_PARAM_VALUE_LENGTH)
    return out


def new_params(run_id: str, logged: Mapping[str, str], params: Mapping[str, str]) -> dict[str, str]:
    """The params not logged yet; a changed value raises (MLflow params are write-once)."""
    changed = {k: (logged[k], v) for k, v in params.items() if k in logged and logged[k] != v}
    if changed:
        shown = {k: {"logged": old, "new": new} for k, (old, new) in list(changed.items())[:5]}
        raise RegistryError(
            f"run {run_id}: params are write-once, but {len(changed)} would change: {shown}; "
            "log the new values under other keys, or start a new run"
        )
    return {k: v for k, v in params.items() if k not in logged}


def string_tags(tags: Mapping[str, object] | None) -> dict[str, str]:
    return {
        check_key("tag", k): truncate(stringify(v), MAX_TAG_VALUE_LENGTH)
        for k, v in (tags or {}).items()
    }


def serialize_dict(obj: object, artifact_file: str) -> str:
    """JSON, or YAML when the file name says so; same bytes from both implementations."""
    if artifact_file.endswith((".yaml", ".yml")):
        import yaml

        return str(yaml.safe_dump(obj, sort_keys=True, default_flow_style=False))
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def check_artifact_path(path: str) -> str:
    """A relative posix path inside the run's artifacts ('' means the root)."""
    norm = posixpath.normpath(path) if path else ""
    if path and (norm != path.rstrip("/") or norm.startswith(("..", "/")) or norm == "."):
        raise RegistryError(
            f"artifact path {path!r}: expected a relative path inside the run's artifacts "
            "(no '..', no leading '/')"
        )
    return norm


def model_source(artifact_uri: str, artifact_path: str) -> str:
    return f"{artifact_uri.rstrip('/')}/{check_artifact_path(artifact_path)}"


def git_output(here: Path, *args: str) -> str | None:
    """``git -C here *args``'s standard output, or None when git is missing or fails (e.g.
    ``here`` is not in a checkout)."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(here), *args],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """The code that ran: git commit of the checkout recflow is imported from, and its version.

    ``unknown`` when recflow is not installed from a git checkout or git is missing.
    """
    import recflow

    head = (git_output(Path(recflow.__file__).resolve().parent, "rev-parse", "HEAD") or "").strip()
    commit = head if re.fullmatch(r"[0-9a-f]{40,64}", head) else "unknown"
    return {TAG_GIT_COMMIT: commit, TAG_RECFLOW_VERSION: recflow.__version__}
