"""How "registration complete" is marked, and that nothing incomplete gets an alias."""

from __future__ import annotations

from pathlib import Path

import pytest

from recflow.errors import RegistryError
from recflow.registry import InMemoryRegistry
from recflow.registry.base import (
    REGISTRATION_COMPLETE,
    REGISTRATION_PENDING,
    TAG_REGISTRATION,
)

NAME = "m"


@pytest.fixture()
def registry(tmp_path: Path) -> InMemoryRegistry:
    return InMemoryRegistry(tmp_path / "registry")


def logged_run(registry: InMemoryRegistry, tmp_path: Path, name: str = "r") -> str:
    run = registry.start_run("exp", name, {"airflow.dag_run_id": name})
    model = tmp_path / f"model-{name}"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"x")
    registry.log_artifacts(run, model, "model")
    return run


def test_a_pending_version_cannot_get_an_alias(registry, tmp_path: Path) -> None:
    run = logged_run(registry, tmp_path)
    pending = {TAG_REGISTRATION: REGISTRATION_PENDING}
    version = registry.register_version(NAME, run, "model", tags=pending)
    for alias in ("challenger", "champion", "previous"):
        with pytest.raises(RegistryError, match="not completely registered"):
            registry.set_alias(NAME, alias, version)
    assert registry.get_version(NAME, version).aliases == ()
    registry.set_version_tag(NAME, version, TAG_REGISTRATION, REGISTRATION_COMPLETE)
    registry.set_alias(NAME, "challenger", version)
    assert registry.get_version(NAME, version).aliases == ("challenger",)


def test_a_retried_registration_gets_the_same_version_and_never_uncompletes_it(
    registry, tmp_path: Path
) -> None:
    run = logged_run(registry, tmp_path)
    pending = {TAG_REGISTRATION: REGISTRATION_PENDING, "k": "1"}
    version = registry.register_version(NAME, run, "model", tags=pending)
    assert registry.register_version(NAME, run, "model", tags=pending) == version  # still pending
    assert registry.get_version(NAME, version).tags[TAG_REGISTRATION] == REGISTRATION_PENDING
    registry.set_version_tag(NAME, version, TAG_REGISTRATION, REGISTRATION_COMPLETE)
    registry.set_alias(NAME, "challenger", version)
    again = registry.register_version(NAME, run, "model", tags={**pending, "k": "2"})
    assert again == version
    tags = registry.get_version(NAME, version).tags
    assert tags[TAG_REGISTRATION] == REGISTRATION_COMPLETE and tags["k"] == "2"


def test_versions_without_the_marker_count_as_complete(registry, tmp_path: Path) -> None:
    # registered before the marker existed, or by a pipeline that does not use it
    version = registry.register_version(NAME, logged_run(registry, tmp_path), "model")
    registry.set_alias(NAME, "champion", version)
    assert registry.get_version_by_alias(NAME, "champion").version == version
