"""Promotion steps against a fake server that enforces TF Serving's rules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from recflow.contract import INPUT_USER_ID
from recflow.errors import ModelNotReady, PromotionError, ServingError, VerificationFailed
from recflow.promotion import Promoter, install_version
from recflow.serving.model_config import ModelEntry, read_entries

MODEL = "recommender"


class FakeServer:
    """Loads a version when its folder exists; refuses labels on versions it has not loaded."""

    def __init__(self, base: Path, broken: set[int] | None = None) -> None:
        self.base = base
        self.loaded: set[int] = set()
        self.labels: dict[str, int] = {}
        self.broken = broken or set()
        self.history: list[tuple[tuple[int, ...], dict[str, int]]] = []

    def reload_config(self, entries: Mapping[str, ModelEntry]) -> None:
        entry = entries[MODEL]
        will_load = {v for v in entry.versions if (self.base / MODEL / str(v)).is_dir()}
        for label, version in entry.labels.items():
            if version not in self.loaded or version not in will_load:
                raise ServingError(f"label {label} -> {version}: version not loaded")
        self.loaded = will_load
        self.labels = dict(entry.labels)
        self.history.append((tuple(sorted(self.loaded)), dict(self.labels)))

    def wait_until_available(self, model: str, version: int, *, timeout: float) -> None:
        if version in self.broken or version not in self.loaded:
            raise ModelNotReady(f"version {version} failed to load")

    def predict(self, model, inputs, *, version=None, label=None):
        version = self.labels[label] if label else version
        users = np.asarray(inputs["user_id"]).astype(str)
        return _answers(users, version)


def _answers(users: np.ndarray, version: int) -> dict[str, np.ndarray]:
    items = np.array([[f"{version}-{u}-{j}" for j in range(3)] for u in users], dtype=object)
    return {"item_ids": items, "scores": np.tile(np.array([3.0, 2.0, 1.0]), (len(users), 1))}


@pytest.fixture()
def setup(tmp_path):
    saved = tmp_path / "export"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"model")
    server = FakeServer(tmp_path / "models")
    promoter = Promoter(server, tmp_path / "models.config", MODEL, tmp_path / "models")
    return promoter, server, saved


def _request(users: list[str]) -> dict[str, np.ndarray]:
    return {INPUT_USER_ID: np.asarray(users, dtype=object)}


def _promote(promoter: Promoter, saved: Path, version: int) -> int | None:
    promoter.deploy_canary(saved, version)
    users = ["a", "b"]
    promoter.verify_canary(version, _request(users), _answers(np.array(users), version))
    return promoter.promote_stable(version)


def test_first_promotion_then_replacement(setup):
    promoter, server, saved = setup
    assert _promote(promoter, saved, 1) is None
    assert server.labels == {"stable": 1}
    assert _promote(promoter, saved, 2) == 1
    entry = read_entries(promoter.config_file)[MODEL]
    assert entry.versions == (1, 2) and dict(entry.labels) == {"stable": 2}
    # stable never pointed at an unloaded or unverified version along the way
    for loaded, labels in server.history:
        assert set(labels.values()) <= set(loaded)
    assert _promote(promoter, saved, 3) == 2
    assert read_entries(promoter.config_file)[MODEL].versions == (
        2,
        3,
    )  # older than previous unloaded


def test_canary_never_gets_default_traffic_before_verification(setup):
    promoter, server, saved = setup
    _promote(promoter, saved, 1)
    promoter.deploy_canary(saved, 2)
    assert server.labels == {"stable": 1, "canary": 2}


def test_failed_verification_withdraws_canary(setup):
    promoter, server, saved = setup
    _promote(promoter, saved, 1)
    promoter.deploy_canary(saved, 2)
    wrong = _answers(np.array(["a"]), 99)
    with pytest.raises(VerificationFailed, match="withdrawn"):
        promoter.verify_canary(2, _request(["a"]), wrong)
    assert server.labels == {"stable": 1}
    assert server.loaded == {1}
    assert read_entries(promoter.config_file)[MODEL].versions == (1,)


def test_version_that_never_loads_is_removed(setup, tmp_path):
    promoter, server, saved = setup
    _promote(promoter, saved, 1)
    server.broken = {2}
    with pytest.raises(PromotionError, match="did not become AVAILABLE"):
        promoter.deploy_canary(saved, 2)
    assert server.labels == {"stable": 1}
    assert read_entries(promoter.config_file)[MODEL].versions == (1,)


def test_refused_config_restores_file(setup):
    promoter, server, saved = setup
    _promote(promoter, saved, 1)
    before = promoter.config_file.read_text()

    def refuse(entries):
        raise ServingError("server says no")

    server.reload_config = refuse  # type: ignore[method-assign]
    with pytest.raises(PromotionError, match="previous config is back"):
        promoter.deploy_canary(saved, 2)
    assert promoter.config_file.read_text() == before


def test_promote_requires_canary(setup):
    promoter, _, saved = setup
    _promote(promoter, saved, 1)
    with pytest.raises(PromotionError, match="not the canary"):
        promoter.promote_stable(5)


def test_install_version_is_immutable(setup, tmp_path):
    _, _, saved = setup
    install_version(saved, tmp_path / "m", 1)
    install_version(saved, tmp_path / "m", 1)  # retry with the same model is fine
    other = tmp_path / "other"
    other.mkdir()
    (other / "saved_model.pb").write_bytes(b"different")
    with pytest.raises(PromotionError, match="immutable"):
        install_version(other, tmp_path / "m", 1)


def test_the_contract_comparison_is_passed_in(setup):
    """The promoter asks the comparison it was given, not the recommender contract."""
    _, server, saved = setup
    asked = []

    def never_equal(served, expected):
        asked.append((set(served), set(expected)))
        return ["answers differ by this contract"]

    promoter = Promoter(server, saved.parent / "p.config", MODEL, saved.parent / "models",
                        compare=never_equal)  # fmt: skip
    promoter.deploy_canary(saved, 1)
    with pytest.raises(VerificationFailed, match="answers differ by this contract"):
        promoter.verify_canary(1, _request(["a"]), _answers(np.array(["a"]), 1))
    assert len(asked) == 1
