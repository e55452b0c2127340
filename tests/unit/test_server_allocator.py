"""The local server's allocator choice (recflow.serving.server.allocator), without exec."""

from __future__ import annotations

from pathlib import Path

import pytest

from recflow.errors import ConfigError
from recflow.serving.server import allocator

pytestmark = pytest.mark.unit
LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def test_auto_preloads_jemalloc_once_and_keeps_other_preloads() -> None:
    env = allocator.preload_env("auto", {"LD_PRELOAD": "/opt/x.so", "A": "1"}, jemalloc=LIB)
    assert env is not None
    assert env["LD_PRELOAD"] == f"{LIB}:/opt/x.so" and env["A"] == "1"
    assert env[allocator.CHOSEN_ENV] == "1"
    # the re-executed process runs on as it is
    assert allocator.preload_env("auto", env, jemalloc=LIB) is None
    # so does one whose user preloaded jemalloc already
    assert allocator.preload_env("auto", {"LD_PRELOAD": LIB}, jemalloc=LIB) is None


def test_system_never_preloads_and_a_missing_library_depends_on_the_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert allocator.preload_env("system", {}, jemalloc=LIB) is None
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: None)
    assert allocator.preload_env("auto", {}) is None
    with pytest.raises(ConfigError, match="apt-get install libjemalloc2"):
        allocator.preload_env("jemalloc", {})
    with pytest.raises(ConfigError, match="expected one of"):
        allocator.preload_env("tcmalloc", {})


def test_allocator_in_use_reads_the_mappings(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(f"7f00-7f01 r-xp 00000000 08:01 1 {LIB}\n")
    assert allocator.allocator_in_use(maps) == "jemalloc"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert allocator.allocator_in_use(maps) == "glibc malloc"
    assert allocator.allocator_in_use(tmp_path / "absent") == "unknown"
