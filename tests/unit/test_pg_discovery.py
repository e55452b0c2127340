"""tests/integration/pg.py finds PostgreSQL's server programs without a fixed path (issue 13)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

import pg  # noqa: E402


def server_programs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("initdb", "pg_ctl"):
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return folder


def fake_pg_config(tmp_path: Path, bindir: Path) -> Path:
    tools = tmp_path / "tools"
    tools.mkdir()
    script = tools / "pg_config"
    script.write_text(f'#!/bin/sh\n[ "$1" = --bindir ] && echo {bindir}\n')
    script.chmod(0o755)
    return tools


@pytest.fixture()
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $PG_BIN_DIR, no pg_config on PATH, a Debian layout under tmp_path."""
    monkeypatch.delenv("PG_BIN_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(pg, "DEBIAN_LAYOUT", tmp_path / "usr-lib-postgresql")
    return tmp_path


def test_debian_layout_newest_version_first(machine: Path) -> None:
    server_programs(machine / "usr-lib-postgresql" / "13" / "bin")
    newest = server_programs(machine / "usr-lib-postgresql" / "16" / "bin")
    (machine / "usr-lib-postgresql" / "17" / "bin").mkdir(parents=True)  # client only
    assert pg.find_bin_dir() == newest


def test_pg_config_bindir_comes_before_the_layout(machine: Path, monkeypatch) -> None:
    server_programs(machine / "usr-lib-postgresql" / "16" / "bin")
    own = server_programs(machine / "opt" / "pgsql" / "bin")
    monkeypatch.setenv("PATH", str(fake_pg_config(machine, own)))
    assert pg.find_bin_dir() == own


def test_pg_config_of_a_client_only_install_is_passed_over(machine: Path, monkeypatch) -> None:
    client_only = machine / "client" / "bin"
    client_only.mkdir(parents=True)
    monkeypatch.setenv("PATH", str(fake_pg_config(machine, client_only)))
    server = server_programs(machine / "usr-lib-postgresql" / "15" / "bin")
    assert pg.find_bin_dir() == server


def test_nothing_installed_says_where_it_looked_and_what_to_do(machine: Path) -> None:
    assert pg.find_bin_dir() is None
    reason = pg.unavailable_reason()
    assert reason is not None
    assert "pg_config --bindir" in reason and "make system-deps" in reason
