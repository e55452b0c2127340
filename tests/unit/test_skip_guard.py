"""The CI skip guard (tests/_skip_guard.py), exercised on throwaway test suites in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]

CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
from _skip_guard import SkipGuard

def pytest_configure(config):
    config.pluginmanager.register(SkipGuard.from_config(config), "recflow-skip-guard")
"""

SUITE = """
import pytest

def test_runs():
    assert True

def test_needs_gpu():
    pytest.skip("no GPU")

@pytest.mark.skipif(True, reason="PostgreSQL binaries not found")
def test_needs_postgres():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    pass
"""


def run_suite(tmp_path: Path, allowlist: str, *, ci: str = "true", extra: tuple[str, ...] = ()):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    tests = tmp_path / "tests"
    tests.mkdir(exist_ok=True)
    (tests / "conftest.py").write_text(CONFTEST)
    (tests / "test_suite.py").write_text(SUITE)
    (tests / "skip_allowlist.toml").write_text(allowlist)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"CI": ci}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


GPU_ENTRY = """
[[skip]]
test = "tests/test_suite.py::test_needs_gpu"
kind = "gpu"
reason = "needs an NVIDIA GPU"
"""
PG_ENTRY = """
[[skip]]
test = "tests/test_suite.py::test_needs_postgres"
kind = "docker-engine"
reason = "pretends PostgreSQL is outside"
"""


# make test runs the suite on two pytest-xdist workers; the rules must hold there too.
XDIST = pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])


@XDIST
def test_an_unlisted_skip_fails_the_run_under_ci(tmp_path: Path, workers: tuple[str, ...]) -> None:
    code, out = run_suite(tmp_path, GPU_ENTRY, extra=workers)
    assert code == 1, out
    assert "tests/test_suite.py::test_needs_postgres skipped (PostgreSQL binaries not found)" in out
    assert "test_needs_gpu skipped" not in out  # allowed: a reason outside the machine
    assert "2 skipped" in out  # pytest's own summary is unchanged


@XDIST
def test_all_skips_listed_passes(tmp_path: Path, workers: tuple[str, ...]) -> None:
    code, out = run_suite(tmp_path, GPU_ENTRY + PG_ENTRY, extra=workers)
    assert code == 0, out
    assert "skipped tests under CI=true" not in out


def test_outside_ci_skips_are_only_reported(tmp_path: Path) -> None:
    code, out = run_suite(tmp_path, "", ci="false")
    assert code == 0, out
    assert "2 skipped" in out and "skipped tests under CI=true" not in out


@XDIST
def test_stale_entries_fail_the_run(tmp_path: Path, workers: tuple[str, ...]) -> None:
    stale = """
[[skip]]
test = "tests/test_suite.py::test_runs"
kind = "gpu"
reason = "listed, but it runs"

[[skip]]
test = "tests/test_suite.py::test_renamed_long_ago"
kind = "gpu"
reason = "no such test"

[[skip]]
test = "tests/test_gone.py::test_x"
kind = "docker-engine"
reason = "no such file"
"""
    code, out = run_suite(tmp_path, GPU_ENTRY + PG_ENTRY + stale, extra=workers)
    assert code == 1, out
    assert "stale entry tests/test_suite.py::test_runs: it ran without skipping" in out
    assert "stale entry tests/test_suite.py::test_renamed_long_ago: no such test" in out
    assert "stale entry tests/test_gone.py::test_x: tests/test_gone.py does not exist" in out


@XDIST
def test_a_module_skipped_at_import_counts_as_a_skip(
    tmp_path: Path, workers: tuple[str, ...]
) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_optional.py").write_text(
        'import pytest\n\npytest.importorskip("no_such_module_here")\n\n\ndef test_x():\n    pass\n'
    )
    code, out = run_suite(tmp_path, GPU_ENTRY + PG_ENTRY, extra=workers)
    assert code == 1, out
    assert "tests/test_optional.py skipped" in out


def test_entries_must_give_a_reason_outside_the_machine(tmp_path: Path) -> None:
    local = """
[[skip]]
test = "tests/test_suite.py::test_needs_postgres"
kind = "not installed"
reason = "apt-get install postgresql would fix it"
"""
    code, out = run_suite(tmp_path, GPU_ENTRY + local)
    assert code == 1, out
    assert "reasons outside the machine only" in out


def test_deselected_entries_are_not_stale(tmp_path: Path) -> None:
    # Running a subset (-k) must not call the allow-list stale for tests it did not select.
    code, out = run_suite(tmp_path, GPU_ENTRY + PG_ENTRY, extra=("-k", "test_runs"))
    assert code == 0, out


def test_the_repository_allowlist_is_valid() -> None:
    import tomllib

    from _skip_guard import OUTSIDE_KINDS

    entries = tomllib.loads((TESTS_DIR / "skip_allowlist.toml").read_text()).get("skip", [])
    for entry in entries:
        assert entry["kind"] in OUTSIDE_KINDS and entry["reason"], entry
        assert (TESTS_DIR.parent / entry["test"].split("::")[0]).is_file(), entry
