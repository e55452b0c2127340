"""Which memory allocator the local model server runs on: jemalloc when the system has it.

Under hot swaps and traffic, glibc's malloc kept the server's resident memory creeping up for
about half an hour (live native memory, not Python objects: bench/results/soak-diagnosis.md);
on jemalloc it stopped growing after the first few swaps. NVIDIA's Triton documents the same
for loading and unloading SavedModels and the same remedy (``LD_PRELOAD`` of tcmalloc or
jemalloc). An allocator is chosen when a process starts, so ``recflow-model-server`` started
as a program re-executes itself once with ``LD_PRELOAD`` set (same pid, same arguments).

``--malloc=auto`` (default) uses jemalloc if found and glibc's malloc otherwise;
``--malloc=jemalloc`` refuses to start without it; ``--malloc=system`` never preloads.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from recflow.errors import ConfigError

CHOICES = ("auto", "jemalloc", "system")
JEMALLOC = "libjemalloc.so.2"
# Set in the re-executed process: never re-execute twice, whatever LD_PRELOAD says.
CHOSEN_ENV = "RECFLOW_MALLOC_CHOSEN"
_SEARCH = ("/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_jemalloc() -> str | None:
    """Path of the system's jemalloc (Debian: package libjemalloc2), or None."""
    for pattern in _SEARCH:
        for folder in sorted(glob.glob(pattern)):
            candidate = Path(folder) / JEMALLOC
            if candidate.is_file():
                return str(candidate)
    return None


def preload_env(
    choice: str, env: Mapping[str, str], jemalloc: str | None = None
) -> dict[str, str] | None:
    """The environment to re-execute the server with, or None to run on as is."""
    if choice not in CHOICES:
        raise ConfigError(f"--malloc: expected one of {CHOICES}, found {choice!r}")
    if choice == "system" or env.get(CHOSEN_ENV):
        return None
    path = jemalloc or find_jemalloc()
    if path is None:
        if choice == "jemalloc":
            raise ConfigError(
                f"--malloc=jemalloc: expected {JEMALLOC} in {', '.join(_SEARCH)}, found none; "
                "install it (Debian: apt-get install libjemalloc2) or pass --malloc=auto"
            )
        return None
    preloaded = [p for p in env.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p]
    if any(Path(p).name == JEMALLOC for p in preloaded):
        return None
    return {**env, "LD_PRELOAD": ":".join([path, *preloaded]), CHOSEN_ENV: "1"}


def allocator_in_use(maps: Path = Path("/proc/self/maps")) -> str:
    """'jemalloc' if it is mapped into this process, else 'glibc malloc' (for the log)."""
    try:
        text = maps.read_text()
    except OSError:
        return "unknown"
    return "jemalloc" if JEMALLOC in text else "glibc malloc"


def reexec_if_needed(choice: str, program_args: list[str]) -> None:
    """Replace this process by ``python -m recflow.serving.server`` with the chosen allocator
    preloaded (does not return then); returns if nothing needs to change."""
    env = preload_env(choice, os.environ)
    if env is None:
        return
    argv = [sys.executable, "-m", "recflow.serving.server", *program_args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
