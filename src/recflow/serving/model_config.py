"""TF Serving's text-format ``ModelServerConfig`` (the ``--model_config_file``), one entry per model.

The file is what both TF Serving and ``recflow-model-server`` read::

    model_config_list {
      config {
        name: "recommender"
        base_path: "/models/recommender"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 3 versions: 4 } }
        version_labels { key: "stable" value: 3 }
        version_labels { key: "canary" value: 4 }
      }
    }

Only the light ``model_server_config_pb2`` module is imported here (no tensorflow), so the DAG
may import this module at parse time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from recflow.errors import ConfigError
from recflow.storage import atomic_write_text

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig

Policy = Literal["specific", "latest", "all"]
POLICIES: tuple[str, ...] = ("specific", "latest", "all")
PLATFORM = "tensorflow"
# A config naming no model: what a model server starts from before the first deploy.
EMPTY_MODEL_CONFIG = "model_config_list {\n}\n"


@dataclass(frozen=True)
class ModelEntry:
    """One ``config { ... }`` block.

    ``versions`` are served through ``model_version_policy.specific`` (the default policy
    here, because promotion must say exactly which versions serve). ``policy="latest"`` serves
    the ``num_latest`` highest versions on disk and ``policy="all"`` every version; for those
    two, ``versions`` must be empty and labels cannot be checked before the server sees disk.
    """

    name: str
    base_path: str
    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = field(default_factory=dict)
    policy: Policy = "specific"
    num_latest: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(sorted({int(v) for v in self.versions})))
        object.__setattr__(self, "labels", {str(k): int(v) for k, v in self.labels.items()})
        self.check()

    def check(self) -> None:
        """Raise ConfigError naming the first inconsistency."""
        if not self.name:
            raise ConfigError("model entry: expected a non-empty model name, found ''")
        if not self.base_path:
            raise ConfigError(
                f"model {self.name!r}: expected a base_path (folder holding <version>/ "
                "directories), found ''"
            )
        if self.policy not in POLICIES:
            raise ConfigError(
                f"model {self.name!r}: policy expected one of {POLICIES}, found {self.policy!r}"
            )
        if any(v < 0 for v in self.versions):
            raise ConfigError(
                f"model {self.name!r}: versions must be >= 0, found {list(self.versions)}"
            )
        if self.policy != "specific" and self.versions:
            raise ConfigError(
                f"model {self.name!r}: versions {list(self.versions)} are only used by the "
                f"'specific' policy, found policy {self.policy!r}; drop the versions or use "
                "policy='specific'"
            )
        if self.policy == "latest" and self.num_latest < 1:
            raise ConfigError(
                f"model {self.name!r}: num_latest expected >= 1, found {self.num_latest}"
            )
        for label, version in self.labels.items():
            if not label:
                raise ConfigError(f"model {self.name!r}: a version label has an empty name")
            if self.policy == "specific" and version not in self.versions:
                raise ConfigError(
                    f"model {self.name!r}: label {label!r} points at version {version}, which "
                    f"is not among the served versions {list(self.versions)}; add version "
                    f"{version} first (and let it load) or point the label elsewhere"
                )

    # Small immutable edits used by promotion: each returns a new, checked entry.
    def with_versions(self, versions: Iterable[int]) -> ModelEntry:
        return dataclasses.replace(self, versions=tuple(versions), policy="specific")

    def add_version(self, version: int) -> ModelEntry:
        return self.with_versions((*self.versions, version))

    def remove_version(self, version: int) -> ModelEntry:
        """Drop ``version``; refuses while a label still points at it."""
        return self.with_versions(v for v in self.versions if v != version)

    def with_label(self, label: str, version: int) -> ModelEntry:
        return dataclasses.replace(self, labels={**self.labels, label: version})

    def without_label(self, label: str) -> ModelEntry:
        return dataclasses.replace(
            self, labels={k: v for k, v in self.labels.items() if k != label}
        )


def to_proto(entries: Mapping[str, ModelEntry] | Iterable[ModelEntry]) -> ModelServerConfig:
    """Build a ``ModelServerConfig`` with one ``model_config_list`` entry per model."""
    from tensorflow_serving.config import model_server_config_pb2 as pb

    items = list(entries.values()) if isinstance(entries, Mapping) else list(entries)
    names = [e.name for e in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"model names must be unique in a config, found {duplicates} twice")
    config = pb.ModelServerConfig()
    config.model_config_list.SetInParent()  # an empty list is still a ModelConfigList
    for entry in sorted(items, key=lambda e: e.name):
        _entry_to_proto(entry, config.model_config_list.config.add())
    return config


def _entry_to_proto(entry: ModelEntry, out: ModelConfig) -> None:
    out.name = entry.name
    out.base_path = entry.base_path
    out.model_platform = PLATFORM
    policy = out.model_version_policy
    if entry.policy == "specific":
        policy.specific.SetInParent()
        policy.specific.versions.extend(entry.versions)
    elif entry.policy == "latest":
        policy.latest.num_versions = entry.num_latest
    else:
        policy.all.SetInParent()
    for label in sorted(entry.labels):
        out.version_labels[label] = entry.labels[label]


def entry_from_proto(model: ModelConfig) -> ModelEntry:
    which = model.model_version_policy.WhichOneof("policy_choice")
    labels = dict(model.version_labels)
    if which == "specific":
        return ModelEntry(
            model.name, model.base_path, tuple(model.model_version_policy.specific.versions), labels
        )
    if which == "all":
        return ModelEntry(model.name, model.base_path, (), labels, policy="all")
    # TF Serving's default policy (nothing set) is latest { num_versions: 1 }.
    n = model.model_version_policy.latest.num_versions if which == "latest" else 1
    return ModelEntry(model.name, model.base_path, (), labels, policy="latest", num_latest=n or 1)


def from_proto(config: ModelServerConfig) -> dict[str, ModelEntry]:
    which = config.WhichOneof("config")
    if which not in (None, "model_config_list"):
        raise ConfigError(
            f"expected a model_config_list in the ModelServerConfig, found {which}; "
            "only model_config_list is supported"
        )
    out: dict[str, ModelEntry] = {}
    for model in config.model_config_list.config:
        if model.name in out:
            raise ConfigError(
                f"model {model.name!r} is listed twice in the config; keep one entry per model"
            )
        out[model.name] = entry_from_proto(model)
    return out


def parse_text(text: str, *, source: str = "<text>") -> ModelServerConfig:
    """Parse text-format ``ModelServerConfig``; ConfigError names the file and the parse error."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2 as pb

    config = pb.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(
            f"{source}: not a text-format ModelServerConfig ({exc}); expected "
            "'model_config_list { config { name: ... base_path: ... } }'"
        ) from None
    return config


def format_text(config: ModelServerConfig) -> str:
    from google.protobuf import text_format

    return str(text_format.MessageToString(config))


def read_config(path: Path) -> ModelServerConfig:
    """Read the file; a missing file is an empty config."""
    from tensorflow_serving.config import model_server_config_pb2 as pb

    path = Path(path)
    if not path.exists():
        return pb.ModelServerConfig()
    return parse_text(path.read_text(encoding="utf-8"), source=str(path))


def read_entries(path: Path) -> dict[str, ModelEntry]:
    """Entries of the config file by model name; a missing file gives ``{}``."""
    return from_proto(read_config(path))


def write_entries(path: Path, entries: Mapping[str, ModelEntry] | Iterable[ModelEntry]) -> None:
    """Write the config atomically (readers, including a polling server, never see half)."""
    atomic_write_text(Path(path), format_text(to_proto(entries)))
