"""`MlflowRegistry`: the `Registry` protocol on an MLflow 3 tracking server / database store.

mlflow is imported inside methods: this module is imported at Airflow DAG-parse time.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.errors import RegistryError
from recflow.registry import base
from recflow.registry.mlflow_entities import (
    dataset_entity,
    dataset_source,
    import_mlflow,
    tag_filter,
    version_info,
)
from recflow.storage import fetch_into, safe_name

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient


def _is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


class MlflowRegistry:
    """One MlflowClient over ``tracking_uri`` for both tracking and the model registry.

    ``artifact_root`` (database stores only) places each new experiment's artifacts in
    ``artifact_root/<experiment>``; a tracking server decides artifact locations itself
    (``--artifacts-destination``), so it is ignored for http(s) URIs.
    """

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        if not tracking_uri:
            raise RegistryError(
                "MlflowRegistry: expected a tracking URI (sqlite:///..., postgresql://..., "
                "http://host:port), found an empty string; set registry.tracking_uri"
            )
        self.tracking_uri = tracking_uri
        self.artifact_root = (
            None
            if _is_remote(tracking_uri) or artifact_root is None
            else (Path(artifact_root).resolve())
        )
        self._client_: MlflowClient | None = None
        self._experiment_ids: dict[str, str] = {}
        if tracking_uri.startswith("sqlite:///"):
            db = tracking_uri.removeprefix("sqlite:///")
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.tracking_uri!r}, artifact_root={self.artifact_root!r})"

    # ----------------------------------------------------------------------- plumbing
    @property
    def _client(self) -> MlflowClient:
        if self._client_ is None:
            mlflow = import_mlflow()
            with self._calling("open the tracking store"):
                self._client_ = mlflow.MlflowClient(
                    tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
                )
        return self._client_

    @contextlib.contextmanager
    def _calling(self, action: str) -> Iterator[None]:
        """Turn MLflow/transport failures into RegistryError saying what failed and what to do."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except RegistryError:
            raise
        except (MlflowException, OSError) as exc:
            raise RegistryError(
                f"MLflow at {self.tracking_uri}: could not {action}: {_short(exc)}. "
                f"{self._hint(exc)}"
            ) from exc
        except Exception as exc:
            # SQLAlchemy errors can escape the database store unwrapped.
            if type(exc).__module__.startswith("sqlalchemy"):
                raise RegistryError(
                    f"MLflow at {self.tracking_uri}: could not {action}: {_short(exc)}. "
                    f"{self._hint(exc)}"
                ) from exc
            raise

    def _hint(self, exc: BaseException) -> str:
        code = getattr(exc, "error_code", "")
        if code == "RESOURCE_DOES_NOT_EXIST":
            return "Check the experiment/run/model name or id."
        if code in ("INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS"):
            return "Fix the value named above and retry."
        if _is_remote(self.tracking_uri):
            return (
                f"Check that the tracking server is running and reachable "
                f"({self.tracking_uri.rstrip('/')}/health) and that the tracking URI is right."
            )
        return "Check the tracking URI and that its database folder exists and is writable."

    def _experiment_id(self, experiment: str, *, create: bool) -> str | None:
        if experiment in self._experiment_ids:
            return self._experiment_ids[experiment]
        from mlflow.exceptions import MlflowException

        client = self._client
        with self._calling(f"look up experiment {experiment!r}"):
            exp = client.get_experiment_by_name(experiment)
            if exp is None and not create:
                return None
            if exp is None:
                location = (
                    (self.artifact_root / safe_name(experiment)).as_uri()
                    if self.artifact_root
                    else None
                )
                try:
                    exp_id = client.create_experiment(experiment, artifact_location=location)
                except MlflowException as exc:  # created meanwhile by a parallel task
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    found = client.get_experiment_by_name(experiment)
                    if found is None:  # created and deleted meanwhile: report the first error
                        raise
                    exp_id = found.experiment_id
            else:
                exp_id = exp.experiment_id
                if exp.lifecycle_stage == "deleted":
                    if not create:
                        return None
                    client.restore_experiment(exp_id)
        self._experiment_ids[experiment] = str(exp_id)
        return str(exp_id)

    # ----------------------------------------------------------------------- runs
    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> str:
        exp_id = self._experiment_id(experiment, create=True)
        if exp_id is None:  # create=True creates or restores it
            raise RegistryError(f"start_run: experiment {experiment!r} could not be created")
        all_tags = base.string_tags({**base.code_version(), **tags})
        with self._calling(f"start run {run_name!r} in experiment {experiment!r}"):
            run = self._client.create_run(exp_id, run_name=run_name, tags=all_tags)
        return str(run.info.run_id)

    def find_run(self, experiment: str, tags: Mapping[str, str]) -> str | None:
        exp_id = self._experiment_id(experiment, create=False)
        if exp_id is None:
            return None
        want = base.string_tags(tags)
        with self._calling(f"search runs of experiment {experiment!r} by tags {want}"):
            runs = self._client.search_runs(
                [exp_id],
                filter_string=tag_filter(want),
                order_by=["attributes.start_time DESC"],
                max_results=100,
            )
        for run in runs:  # the filter may be looser than exact (see _tag_filter)
            if all(run.data.tags.get(k) == v for k, v in want.items()):
                return str(run.info.run_id)
        return None

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        flat = base.flatten_params(params)
        with self._calling(f"log params to run {run_id}"):
            logged = self._client.get_run(run_id).data.params
            todo = base.new_params(run_id, logged, flat)
            if todo:
                self._client.log_batch(run_id, params=[Param(k, v) for k, v in todo.items()])

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        from mlflow.entities import Metric

        now = time.time_ns() // 1_000_000
        batch = [
            Metric(base.check_key("metric", k), float(v), now, int(step or 0))
            for k, v in metrics.items()
        ]
        with self._calling(f"log metrics to run {run_id}"):
            self._client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, v) for k, v in base.string_tags(tags).items()]
        with self._calling(f"set tags on run {run_id}"):
            self._client.log_batch(run_id, tags=batch)

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        if not Path(local_dir).is_dir():
            raise RegistryError(f"log_artifacts: expected a folder, found nothing at {local_dir}")
        dst = base.check_artifact_path(artifact_path) or None
        with self._calling(f"upload {local_dir} to run {run_id} as {artifact_path!r}"):
            self._client.log_artifacts(run_id, str(local_dir), dst)

    def log_artifact(self, run_id: str, local_file: Path, artifact_path: str | None = None) -> None:
        if not Path(local_file).is_file():
            raise RegistryError(f"log_artifact: expected a file, found nothing at {local_file}")
        dst = base.check_artifact_path(artifact_path or "") or None
        with self._calling(f"upload {local_file} to run {run_id}"):
            self._client.log_artifact(run_id, str(local_file), dst)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        base.check_artifact_path(artifact_file)
        with self._calling(f"write {artifact_file!r} to run {run_id}"):
            self._client.log_text(run_id, text, artifact_file)

    def log_dict(self, run_id: str, obj: object, artifact_file: str) -> None:
        self.log_text(run_id, base.serialize_dict(obj, artifact_file), artifact_file)

    def log_dataset(
        self, run_id: str, df: pd.DataFrame, *, name: str, digest: str, source: str, context: str
    ) -> None:
        mlflow = import_mlflow()
        from mlflow.entities import DatasetInput, InputTag

        with self._calling(f"record dataset {name!r} as an input of run {run_id}"):
            # Silences MLflow's notes on ambiguous local sources and nullable integer columns:
            # the source string and canonical dtypes are ours, so they say nothing useful.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                # MLflow caps dataset digests at 36 characters; a sha256 prefix stays unique
                # enough to tell batches apart (the full digest is in the run's tags).
                entity = dataset_entity(
                    mlflow, df, source=source, name=name, digest=digest[: base.MAX_DATASET_DIGEST]
                )
            tags = [InputTag(base.DATASET_CONTEXT_TAG, context)]
            self._client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=tags)])

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        with self._calling(f"end run {run_id} as {status}"):
            self._client.set_terminated(run_id, status=base.check_status(status))

    def get_run(self, run_id: str) -> base.RunInfo:
        with self._calling(f"read run {run_id}"):
            run = self._client.get_run(run_id)
        datasets = tuple(
            base.DatasetRef(
                name=di.dataset.name,
                digest=di.dataset.digest,
                source=dataset_source(di.dataset.source),
                context=next((t.value for t in di.tags if t.key == base.DATASET_CONTEXT_TAG), ""),
            )
            for di in (run.inputs.dataset_inputs if run.inputs else [])
        )
        return base.RunInfo(
            run_id=run.info.run_id,
            experiment_id=str(run.info.experiment_id),
            run_name=run.info.run_name or "",
            status=str(run.info.status),
            artifact_uri=run.info.artifact_uri,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags=dict(run.data.tags),
            datasets=datasets,
        )

    def list_artifacts(self, run_id: str, path: str = "") -> list[str]:
        rel = base.check_artifact_path(path)
        out: list[str] = []
        with self._calling(f"list artifacts of run {run_id} under {path!r}"):
            pending = [rel or None]
            while pending:
                for info in self._client.list_artifacts(run_id, pending.pop()):
                    (pending if info.is_dir else out).append(info.path)
            if not out and rel:  # a file path lists as empty; see whether its folder holds it
                parent = rel.rpartition("/")[0] or None
                entries = self._client.list_artifacts(run_id, parent)
                out = [i.path for i in entries if i.path == rel and not i.is_dir]
        return sorted(out)

    def download_artifacts(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        rel = base.check_artifact_path(artifact_path)
        if not rel:
            raise RegistryError(
                f"download_artifacts: expected a file or folder inside run {run_id}, found ''; "
                "name what to download (e.g. 'model')"
            )

        def fetch(scratch: Path) -> Path:
            with self._calling(f"download {artifact_path!r} of run {run_id}"):
                return Path(self._client.download_artifacts(run_id, rel, str(scratch)))

        return fetch_into(Path(dst), fetch)

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
        from mlflow.exceptions import MlflowException

        client = self._client
        with self._calling(f"read run {run_id} to register {name!r}"):
            artifact_uri = client.get_run(run_id).info.artifact_uri
        if not self.list_artifacts(run_id, artifact_path):
            raise RegistryError(
                f"register_version({name!r}): run {run_id} has no artifacts under "
                f"{artifact_path!r}; log the model folder with log_artifacts first"
            )
        source = base.model_source(artifact_uri, artifact_path)
        str_tags = base.string_tags(tags)
        with self._calling(f"register {source} as a version of {name!r}"):
            try:
                client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            # A retried task gets the version it created before, not a duplicate.
            for mv in client.search_model_versions(f"run_id = '{run_id}'"):
                if mv.name == name and mv.source == source:
                    existing = dict(client.get_model_version(name, mv.version).tags or {})
                    for key, value in base.retry_tags(existing, str_tags).items():
                        client.set_model_version_tag(name, mv.version, key, value)
                    if description:
                        client.update_model_version(name, mv.version, description=description)
                    return int(mv.version)
            mv = client.create_model_version(
                name,
                source,
                run_id=run_id,
                tags=str_tags,
                description=description or None,
                await_creation_for=300,
            )
        if mv.status != "READY":
            raise RegistryError(
                f"{name} v{mv.version}: expected status READY after registration, found "
                f"{mv.status} ({mv.status_message}); inspect the version in the MLflow UI"
            )
        return int(mv.version)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        base.check_alias(alias)
        base.check_complete(self.get_version(name, version), f"set alias {name}@{alias}")
        with self._calling(f"point alias {name}@{alias} at version {version}"):
            self._client.set_registered_model_alias(name, alias, str(int(version)))

    def delete_alias(self, name: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        with self._calling(f"delete alias {name}@{alias}"):
            try:
                self._client.delete_registered_model_alias(name, alias)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise

    def get_version_by_alias(self, name: str, alias: str) -> base.ModelVersionInfo | None:
        from mlflow.exceptions import MlflowException

        # get_model_version_by_alias, not search results: searches on SQL stores can return
        # versions with empty `aliases`.
        with self._calling(f"resolve alias {name}@{alias}"):
            try:
                mv = self._client.get_model_version_by_alias(name, alias)
            except MlflowException:
                # A missing model or alias is an answer (None), not an error; re-raise the rest.
                try:
                    model = self._client.get_registered_model(name)
                except MlflowException as exc:
                    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                        return None
                    raise
                if alias not in (model.aliases or {}):
                    return None
                raise
        return version_info(mv)

    def get_version(self, name: str, version: int) -> base.ModelVersionInfo:
        with self._calling(f"read {name} version {version}"):
            return version_info(self._client.get_model_version(name, str(int(version))))

    def set_version_tag(self, name: str, version: int, key: str, value: object) -> None:
        ((key, text),) = base.string_tags({key: value}).items()
        with self._calling(f"tag {name} v{version} with {key!r}"):
            self._client.set_model_version_tag(name, str(int(version)), key, text)

    def update_description(self, name: str, version: int, text: str) -> None:
        with self._calling(f"update the description of {name} v{version}"):
            self._client.update_model_version(name, str(int(version)), description=text)

    def download_version(self, name: str, version: int, dst: Path) -> Path:
        mlflow = import_mlflow()
        source = self.get_version(name, version).source

        def fetch(scratch: Path) -> Path:
            with self._calling(f"download {name} v{version} from {source}"):
                return Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=source, dst_path=str(scratch), tracking_uri=self.tracking_uri
                    )
                )

        return fetch_into(Path(dst), fetch)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
