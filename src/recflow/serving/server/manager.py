"""Versions of every model: what the version policy asks for, what is loaded, and the labels.

``ModelManager.reload`` applies a ModelServerConfig the way TF Serving's
``ServerCore::ReloadConfig`` does (labels checked first, then every aspired version loaded);
``poll`` is one pass of the file-system poller; requests only take a short lock.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.serving.metrics import ServingMetrics
from recflow.serving.server.servable import Servable, ServableError, load_servable

if TYPE_CHECKING:
    from tensorflow_serving.apis.model_pb2 import ModelSpec
    from tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig

log = logging.getLogger("recflow.serving.server")

_VERSION_DIR = re.compile(r"^\d+$")

# tensorflow_serving.apis.get_model_status_pb2.ModelVersionStatus.State values (no import).
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50

Loader = Callable[[str, int, Path], Servable]
# Told every servable AVAILABLE and every label after each reload or poll, before it returns.
ChangeListener = Callable[[list[Servable], dict[str, dict[str, int]]], None]


@dataclasses.dataclass
class VersionRecord:
    state: int
    error: str | None = None
    servable: Servable | None = None


def scan_versions(base_path: Path) -> dict[int, Path]:
    """Integer-named folders holding a saved_model.pb; scratch folders such as '.3.tmp-x' skip."""
    if not base_path.is_dir():
        return {}
    out: dict[int, Path] = {}
    for child in base_path.iterdir():
        if _VERSION_DIR.match(child.name) and (child / "saved_model.pb").is_file():
            out[int(child.name)] = child
    return out


def aspired_versions(model: ModelConfig, on_disk: dict[int, Path]) -> set[int]:
    policy = model.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "specific":
        return set(policy.specific.versions) & set(on_disk)
    if which == "all":
        return set(on_disk)
    n = policy.latest.num_versions if which == "latest" else 1
    return set(sorted(on_disk)[-max(n, 1) :])


class ModelManager:
    """The state of every model; reload/poll are serialised, requests only take a short lock."""

    def __init__(
        self,
        *,
        allow_version_labels_for_unavailable_models: bool = False,
        loader: Loader = load_servable,
    ) -> None:
        from tensorflow_serving.config import model_server_config_pb2 as pb

        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._loader = loader
        self._apply_lock = threading.Lock()  # one reload or poll at a time
        self._lock = threading.Lock()  # guards the three maps below; never held while loading
        self._config = pb.ModelServerConfig()
        self._records: dict[str, dict[int, VersionRecord]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._blocked: set[tuple[str, int]] = set()  # failed loads, not retried while aspired
        self._missing_logged: set[str] = set()
        self.metrics = ServingMetrics()
        self._listener: ChangeListener | None = None

    @property
    def requests(self) -> Counter[tuple[str, str, str]]:
        """Request counts by (model, api, status code), as in the Prometheus text."""
        return self.metrics.counts()

    # -- config ------------------------------------------------------------------------------
    @property
    def config(self) -> ModelServerConfig:
        with self._lock:
            return self._config

    def reload(self, new: ModelServerConfig) -> None:
        """Apply a config the way ServerCore::ReloadConfig does; raises ServableError."""
        with self._apply_lock:
            which = new.WhichOneof("config")
            if which is None:
                log.info("Taking no action for empty config.")
                return
            if which != "model_config_list":
                raise ServableError(
                    "INVALID_ARGUMENT",
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported",
                )
            self._validate(new)
            labels = self._check_labels(new)
            old_names = {m.name for m in self.config.model_config_list.config}
            with self._lock:
                self._config = new
                self._labels = labels
            self.metrics.set_models(m.name for m in new.model_config_list.config)
            self._sync()
            self._tell_listener()
            self._raise_if_new_models_failed(
                [m.name for m in new.model_config_list.config if m.name not in old_names]
            )

    @staticmethod
    def _validate(config: ModelServerConfig) -> None:
        names = Counter(m.name for m in config.model_config_list.config)
        for name, n in names.items():
            if n > 1:
                raise ServableError(
                    "INVALID_ARGUMENT", f"Illegal to list model {name}, {n} times in config list"
                )
        for m in config.model_config_list.config:
            if not m.name or not m.base_path:
                raise ServableError(
                    "INVALID_ARGUMENT",
                    f"every model config needs a name and a base_path, found name={m.name!r} "
                    f"base_path={m.base_path!r}",
                )
            if m.model_platform not in ("", "tensorflow"):
                raise ServableError(
                    "INVALID_ARGUMENT",
                    f"Model {m.name} requests unsupported platform {m.model_platform}",
                )

    def _check_labels(self, config: ModelServerConfig) -> dict[str, dict[str, int]]:
        with self._lock:
            current = {k: dict(v) for k, v in self._labels.items()}
            available = {
                (name, v)
                for name, recs in self._records.items()
                for v, r in recs.items()
                if r.state == AVAILABLE
            }
        out: dict[str, dict[str, int]] = {}
        for m in config.model_config_list.config:
            for label, version in m.version_labels.items():
                existing = current.get(m.name, {}).get(label)
                allowed = self._allow_unavailable_labels and existing in (None, version)
                if not allowed and (m.name, version) not in available:
                    raise ServableError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model {m.name}, "
                        "which is not currently available for inference",
                    )
                out.setdefault(m.name, {})[label] = version
        return out

    def _raise_if_new_models_failed(self, names: list[str]) -> None:
        failed = []
        with self._lock:
            for name in names:
                recs = self._records.get(name, {})
                if recs and not any(r.state == AVAILABLE for r in recs.values()):
                    errors = "; ".join(f"version {v}: {r.error}" for v, r in recs.items())
                    failed.append(f"{{name: {name} due to error: {errors}}}")
        if failed:
            raise ServableError(
                "UNKNOWN",
                f"{len(failed)} model(s) did not become available: {{{', '.join(failed)}}}",
            )

    # -- file system -------------------------------------------------------------------------
    def poll(self) -> None:
        """One pass over every base path: load newly aspired versions, unload the others."""
        with self._apply_lock:
            self._sync()
            self._tell_listener()

    def table(self) -> tuple[list[Servable], dict[str, dict[str, int]]]:
        """Every loaded servable and every label (model -> label -> version)."""
        with self._lock:
            servables = [
                r.servable
                for recs in self._records.values()
                for r in recs.values()
                if r.servable is not None
            ]
            return servables, {name: dict(v) for name, v in self._labels.items()}

    def set_listener(self, listener: ChangeListener | None) -> None:
        """Tell ``listener`` the current table now and after every later change; serialised
        with reloads and polls, so no change falls between the two."""
        with self._apply_lock:
            self._listener = listener
            self._tell_listener()

    def _tell_listener(self) -> None:
        if self._listener is not None:
            self._listener(*self.table())

    def _sync(self) -> None:
        config = self.config
        listed = set()
        unloaded = 0
        for model in config.model_config_list.config:
            listed.add(model.name)
            base = Path(model.base_path)
            if not base.is_dir() and model.name not in self._missing_logged:
                self._missing_logged.add(model.name)
                log.warning("model %s: base path %s does not exist yet; polling", model.name, base)
            on_disk = scan_versions(base)
            aspired = aspired_versions(model, on_disk)
            # A failed version is retried only after it stopped being aspired for a while.
            self._blocked = {(n, v) for n, v in self._blocked if n != model.name or v in aspired}
            for version in sorted(aspired):
                if (
                    self._state(model.name, version) != AVAILABLE
                    and (model.name, version) not in self._blocked
                ):
                    self._load(model.name, version, on_disk[version])
            # Unload after loading, so a model keeps serving while its versions change.
            for version in self._loaded_versions(model.name) - aspired:
                self._unload(model.name, version)
                unloaded += 1
        with self._lock:
            gone = [n for n in self._records if n not in listed]
        for name in gone:
            for version in self._loaded_versions(name):
                self._unload(name, version)
                unloaded += 1
        if unloaded:
            # A SavedModel's functions and variables sit in reference cycles: without a full
            # collection an unloaded version's memory stays until some later one (the soak saw
            # ~10-15 MB per hot swap). TF Serving frees a version's session when it unloads.
            gc.collect()

    def _state(self, name: str, version: int) -> int | None:
        with self._lock:
            rec = self._records.get(name, {}).get(version)
            return rec.state if rec else None

    def _loaded_versions(self, name: str) -> set[int]:
        with self._lock:
            return {v for v, r in self._records.get(name, {}).items() if r.servable is not None}

    def _set(self, name: str, version: int, record: VersionRecord) -> None:
        with self._lock:
            self._records.setdefault(name, {})[version] = record

    def _load(self, name: str, version: int, path: Path) -> None:
        self._set(name, version, VersionRecord(START))
        self._set(name, version, VersionRecord(LOADING))
        log.info("Loading servable: {name: %s version: %d} from %s", name, version, path)
        started = time.monotonic()
        try:
            servable = self._loader(name, version, path)
        except Exception as exc:  # any load or warmup failure ends this version with an error
            self._blocked.add((name, version))
            self._set(name, version, VersionRecord(END, f"{type(exc).__name__}: {exc}"))
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, version, exc)
            return
        self._set(name, version, VersionRecord(AVAILABLE, None, servable))
        log.info(
            "Successfully loaded servable version {name: %s version: %d} in %.2fs",
            name,
            version,
            time.monotonic() - started,
        )

    def _unload(self, name: str, version: int) -> None:
        # Requests already holding the Servable finish with it; new ones cannot find it.
        self._set(name, version, VersionRecord(UNLOADING))
        self._set(name, version, VersionRecord(END))
        log.info("Unloaded servable version {name: %s version: %d}", name, version)

    # -- requests ----------------------------------------------------------------------------
    def resolve_version(self, spec: ModelSpec) -> tuple[str, int | None]:
        """(name, version or None for latest) from a ModelSpec; label errors as TF Serving."""
        if not spec.name:
            raise ServableError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return spec.name, int(spec.version.value)
        if choice == "version_label":
            with self._lock:
                version = self._labels.get(spec.name, {}).get(spec.version_label)
            if version is None:
                raise ServableError(
                    "INVALID_ARGUMENT",
                    f"Unrecognized servable version label: {spec.version_label}",
                )
            return spec.name, version
        return spec.name, None

    def servable(self, spec: ModelSpec) -> Servable:
        name, version = self.resolve_version(spec)
        with self._lock:
            recs = self._records.get(name, {})
            if version is None:
                ready = [v for v, r in recs.items() if r.servable is not None]
                if not ready:
                    raise ServableError(
                        "NOT_FOUND", f"Servable not found for request: Latest({name})"
                    )
                version = max(ready)
            rec = recs.get(version)
            if rec is None or rec.servable is None:
                raise ServableError(
                    "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
                )
            return rec.servable

    def status(self, spec: ModelSpec) -> list[tuple[int, int, str | None]]:
        """(version, state, error) as GetModelStatus reports them, NOT_FOUND as TF Serving."""
        name, version = self.resolve_version(spec)
        with self._lock:
            recs = dict(self._records.get(name, {}))
        if version is not None:
            if version not in recs:
                raise ServableError(
                    "NOT_FOUND", f"Could not find version {version} of model {name}"
                )
            recs = {version: recs[version]}
        if not recs:
            raise ServableError("NOT_FOUND", f"Could not find any versions of model {name}")
        return [(v, r.state, r.error) for v, r in sorted(recs.items())]

    def snapshot(self) -> dict[str, dict[int, int]]:
        with self._lock:
            return {n: {v: r.state for v, r in recs.items()} for n, recs in self._records.items()}

    def unload_all(self) -> None:
        with self._apply_lock:
            for name in list(self.snapshot()):
                for version in self._loaded_versions(name):
                    self._unload(name, version)
