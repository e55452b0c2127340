"""`InMemoryRegistry`: the `Registry` protocol in dicts, for unit tests of other modules.

State lives in this object only (not shared across processes); artifacts are copied under the
root folder given to the constructor, so downloads return real files.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.errors import RegistryError
from recflow.registry import base
from recflow.storage import fetch_into, safe_name

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class _Run:
    run_id: str
    experiment_id: str
    run_name: str
    artifact_dir: Path
    status: str = "RUNNING"
    start_time: int = 0
    params: dict[str, str] = field(default_factory=dict)
    # key -> (step, timestamp_ms, value) of the latest point, compared as MLflow does
    metrics: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    history: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    datasets: list[base.DatasetRef] = field(default_factory=list)


@dataclass
class _Model:
    versions: dict[int, base.ModelVersionInfo] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)


class InMemoryRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._experiments: dict[str, str] = {}  # name -> id
        self._runs: dict[str, _Run] = {}
        self._models: dict[str, _Model] = {}

    # ----------------------------------------------------------------------- runs
    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> str:
        exp_id = self._experiments.setdefault(experiment, str(len(self._experiments) + 1))
        run_id = uuid.uuid4().hex
        run = _Run(
            run_id=run_id,
            experiment_id=exp_id,
            run_name=run_name,
            artifact_dir=self.root / safe_name(experiment) / run_id / "artifacts",
            start_time=_now_ms(),
        )
        run.artifact_dir.mkdir(parents=True)
        run.tags.update(
            base.string_tags({**base.code_version(), **tags, base.TAG_RUN_NAME: run_name})
        )
        self._runs[run_id] = run
        return run_id

    def find_run(self, experiment: str, tags: Mapping[str, str]) -> str | None:
        exp_id = self._experiments.get(experiment)
        want = base.string_tags(tags)
        found = [
            r
            for r in self._runs.values()
            if r.experiment_id == exp_id and all(r.tags.get(k) == v for k, v in want.items())
        ]
        if not found:
            return None
        return max(found, key=lambda r: r.start_time).run_id

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        run = self._run(run_id)
        run.params.update(base.new_params(run_id, run.params, base.flatten_params(params)))

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        run = self._run(run_id)
        now = _now_ms()
        for name, value in metrics.items():
            key = base.check_key("metric", name)
            point = (int(step or 0), now, float(value))
            run.history.setdefault(key, []).append(point)
            if key not in run.metrics or point[:2] >= run.metrics[key][:2]:
                run.metrics[key] = point

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        self._run(run_id).tags.update(base.string_tags(tags))

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise RegistryError(f"log_artifacts: expected a folder, found nothing at {local_dir}")
        dst = self._artifact(run_id, artifact_path)
        shutil.copytree(local_dir, dst, dirs_exist_ok=True)

    def log_artifact(self, run_id: str, local_file: Path, artifact_path: str | None = None) -> None:
        local_file = Path(local_file)
        if not local_file.is_file():
            raise RegistryError(f"log_artifact: expected a file, found nothing at {local_file}")
        dst = self._artifact(run_id, artifact_path or "")
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local_file, dst / local_file.name)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        dst = self._artifact(run_id, artifact_file)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")

    def log_dict(self, run_id: str, obj: object, artifact_file: str) -> None:
        self.log_text(run_id, base.serialize_dict(obj, artifact_file), artifact_file)

    def log_dataset(
        self, run_id: str, df: pd.DataFrame, *, name: str, digest: str, source: str, context: str
    ) -> None:
        run = self._run(run_id)
        ref = base.DatasetRef(
            name=name, digest=digest[: base.MAX_DATASET_DIGEST], source=source, context=context
        )
        if ref not in run.datasets:  # MLflow records the same input once
            run.datasets.append(ref)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._run(run_id).status = base.check_status(status)

    def get_run(self, run_id: str) -> base.RunInfo:
        run = self._run(run_id)
        return base.RunInfo(
            run_id=run.run_id,
            experiment_id=run.experiment_id,
            run_name=run.run_name,
            status=run.status,
            artifact_uri=run.artifact_dir.as_uri(),
            params=dict(run.params),
            metrics={k: v[2] for k, v in run.metrics.items()},
            tags=dict(run.tags),
            datasets=tuple(run.datasets),
        )

    def list_artifacts(self, run_id: str, path: str = "") -> list[str]:
        top = self._artifact(run_id, path)
        base_dir = self._run(run_id).artifact_dir
        if top.is_file():
            return [top.relative_to(base_dir).as_posix()]
        if not top.is_dir():
            return []
        return sorted(p.relative_to(base_dir).as_posix() for p in top.rglob("*") if p.is_file())

    def download_artifacts(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        if not base.check_artifact_path(artifact_path):
            raise RegistryError(
                f"download_artifacts: expected a file or folder inside run {run_id}, found ''; "
                "name what to download (e.g. 'model')"
            )
        src = self._artifact(run_id, artifact_path)
        if not src.exists():
            raise RegistryError(
                f"run {run_id} has no artifact {artifact_path!r}; found {self.list_artifacts(run_id)}"
            )
        return _copy_into(src, Path(dst))

    # ----------------------------------------------------------------------- registry
    def register_version(
        self,
        name: str,
        run_id: str,
        artifact_path: str,
        *,
        tags: Mapping[str, object] | None = None,
        description: str = "",
    ) -> int:
        run = self._run(run_id)
        if not self.list_artifacts(run_id, artifact_path):
            raise RegistryError(
                f"register_version({name!r}): run {run_id} has no artifacts under "
                f"{artifact_path!r}; log the model folder with log_artifacts first"
            )
        source = base.model_source(run.artifact_dir.as_uri(), artifact_path)
        model = self._models.setdefault(name, _Model())
        for mv in model.versions.values():  # a retried task gets the version it made before
            if mv.run_id == run_id and mv.source == source:
                model.versions[mv.version] = replace(
                    mv,
                    tags={**mv.tags, **base.retry_tags(mv.tags, base.string_tags(tags))},
                    description=description or mv.description,
                )
                return mv.version
        version = max(model.versions, default=0) + 1
        model.versions[version] = base.ModelVersionInfo(
            name=name,
            version=version,
            run_id=run_id,
            source=source,
            status="READY",
            description=description,
            tags=base.string_tags(tags),
        )
        return version

    def set_alias(self, name: str, alias: str, version: int) -> None:
        base.check_complete(self._version(name, version), f"set alias {name}@{alias}")
        self._models[name].aliases[base.check_alias(alias)] = int(version)

    def delete_alias(self, name: str, alias: str) -> None:
        if name in self._models:
            self._models[name].aliases.pop(alias, None)

    def get_version_by_alias(self, name: str, alias: str) -> base.ModelVersionInfo | None:
        model = self._models.get(name)
        if model is None or alias not in model.aliases:
            return None
        return self.get_version(name, model.aliases[alias])

    def get_version(self, name: str, version: int) -> base.ModelVersionInfo:
        mv = self._version(name, version)
        aliases = tuple(sorted(a for a, v in self._models[name].aliases.items() if v == mv.version))
        return replace(mv, tags=dict(mv.tags), aliases=aliases)

    def set_version_tag(self, name: str, version: int, key: str, value: object) -> None:
        mv = self._version(name, version)
        self._models[name].versions[mv.version] = replace(
            mv, tags={**mv.tags, **base.string_tags({key: value})}
        )

    def update_description(self, name: str, version: int, text: str) -> None:
        mv = self._version(name, version)
        self._models[name].versions[mv.version] = replace(mv, description=text)

    def download_version(self, name: str, version: int, dst: Path) -> Path:
        mv = self._version(name, version)
        src = Path(_uri_to_path(mv.source))
        if not src.exists():
            raise RegistryError(f"{name} v{version}: its source {mv.source} no longer exists")
        return _copy_into(src, Path(dst))

    # ----------------------------------------------------------------------- helpers
    def _run(self, run_id: str) -> _Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RegistryError(
                f"no run {run_id!r} in this registry; start it with start_run or find it "
                "with find_run"
            ) from None

    def _artifact(self, run_id: str, path: str) -> Path:
        rel = base.check_artifact_path(path)
        root = self._run(run_id).artifact_dir
        return root / rel if rel else root

    def _version(self, name: str, version: int) -> base.ModelVersionInfo:
        model = self._models.get(name)
        if model is None:
            raise RegistryError(
                f"no registered model {name!r}; register a version with register_version first"
            )
        try:
            return model.versions[int(version)]
        except KeyError:
            raise RegistryError(
                f"registered model {name!r} has no version {version}; "
                f"it has {sorted(model.versions)}"
            ) from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _uri_to_path(uri: str) -> str:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(uri).path)


def _copy_into(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst/<src.name>`` (replacing an earlier copy) and return that path."""

    def fetch(scratch: Path) -> Path:
        target = scratch / src.name
        if src.is_dir():
            shutil.copytree(src, target)
        else:
            shutil.copy2(src, target)
        return target

    return fetch_into(dst, fetch)
