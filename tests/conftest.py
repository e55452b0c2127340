"""Shared fixtures. Tests get their markers from their folder (unit/, dags/, integration/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _skip_guard import SkipGuard  # noqa: E402

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # CI=true: a skipped test fails the run unless tests/skip_allowlist.toml allows it.
    config.pluginmanager.register(SkipGuard.from_config(config), "recflow-skip-guard")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if tier in ("unit", "dags", "integration"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture()
def tiny_synthetic_config():
    from recflow.config import SyntheticConfig

    return SyntheticConfig(n_users=60, n_items=40, n_genres=4, mean_events_per_user=15, seed=3)
