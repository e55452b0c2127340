"""What a benchmark ran on, recorded the same way by every ``bench/`` script.

Sessions land on different hosts of the same size (2 cores, 24 GiB) whose CPUs differ: on
2026-12-01 the same 1M-event ranking-MLP training took 52 CPU seconds on one and 133 on the next,
both reporting only "AMD EPYC" as their model name. So a result names the CPU family, model and
clock beside the name; figures from hosts that differ there are not comparable.

Hosts that name the same CPU can still differ in speed, and serving pays per request for
system calls and thread wake-ups, which training hardly does. So :func:`describe` also records
the kernel's clock source and CPU-vulnerability mitigations, and :func:`host_costs` measures a
fixed Python loop, a system call and a thread hand-off: two hosts' figures compare only as far
as these do.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recflow.registry.base import git_output

CPUINFO = Path("/proc/cpuinfo")
LOADAVG = Path("/proc/loadavg")
SYS = Path("/sys")


def cpu_identity(cpuinfo: str | None = None) -> dict[str, Any]:
    """The first processor's name, vendor, family, model, stepping and clock from ``/proc/cpuinfo``."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            cpuinfo = ""
    wanted = {
        "model name": "cpu",
        "vendor_id": "cpu_vendor",
        "cpu family": "cpu_family",
        "model": "cpu_model",
        "stepping": "cpu_stepping",
        "cpu MHz": "cpu_mhz",
    }
    found: dict[str, Any] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # only the first processor: the others repeat it on these hosts
        key, _, value = line.partition(":")
        name = wanted.get(key.strip())
        if name and name not in found:
            value = value.strip()
            found[name] = value if name in ("cpu", "cpu_vendor") else _number(value)
    found.setdefault("cpu", platform.processor() or platform.machine())
    return found


def describe(*packages: str) -> dict[str, Any]:
    """The host, its CPU, cores, memory, OS, kernel clock source and mitigations, Python and the
    given packages' versions."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info: dict[str, Any] = {
        "host": platform.node(),
        **cpu_identity(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "arch": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **kernel_identity(),
    }
    for package in packages:
        try:
            info[package.replace("-", "_")] = md.version(package)
        except md.PackageNotFoundError:
            info[package.replace("-", "_")] = None
    return info


def summary(info: dict[str, Any]) -> str:
    """One line for a results file: ``vm: AMD EPYC (family 25, model 17, 2596 MHz), 2 cores, ...``.

    Parts an older record lacks are left out rather than guessed.
    """
    cpu = str(info.get("cpu") or "unknown CPU")
    detail = [
        f"{label} {info[key]}"
        for key, label in (("cpu_family", "family"), ("cpu_model", "model"))
        if info.get(key) is not None
    ]
    if isinstance(info.get("cpu_mhz"), int | float):
        detail.append(f"{info['cpu_mhz']:.0f} MHz")
    if detail:
        cpu += f" ({', '.join(detail)})"
    parts = [cpu]
    if info.get("cores"):
        parts.append(f"{info['cores']} cores")
    if info.get("memory_gib"):
        parts.append(f"{info['memory_gib']:.0f} GiB")
    if info.get("arch"):
        parts.append(str(info["arch"]))
    if info.get("python"):
        parts.append(f"Python {info['python']}")
    host = f"{info['host']}: " if info.get("host") else ""
    return host + ", ".join(parts)


def results_header(*packages: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The fields a benchmark's results file opens with: ``command`` (``python`` and ``argv``,
    by default this process's), ``date`` (UTC, now), ``machine`` (:func:`summary`) and
    ``machine_info`` (:func:`describe` with ``packages``' versions)."""
    host = describe(*packages)
    args = sys.argv if argv is None else argv
    return {
        "command": " ".join(["python", *args]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": summary(host),
        "machine_info": host,
    }


def kernel_identity(sys_root: Path = SYS) -> dict[str, Any]:
    """The clock source and each CPU-vulnerability mitigation the kernel applies ("Not affected"
    entries left out); ``{}`` parts where ``/sys`` does not say."""
    info: dict[str, Any] = {}
    clock = sys_root / "devices/system/clocksource/clocksource0/current_clocksource"
    with contextlib.suppress(OSError):
        info["clocksource"] = clock.read_text().strip()
    found: dict[str, str] = {}
    folder = sys_root / "devices/system/cpu/vulnerabilities"
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            state = entry.read_text().strip()
        except OSError:
            continue
        if state != "Not affected":
            found[entry.name] = state
    info["cpu_mitigations"] = found
    return info


def host_costs(calls: int = 20_000, trips: int = 2_000, rounds: int = 5) -> dict[str, float]:
    """Milliseconds for a fixed pure-Python loop, nanoseconds per system call and microseconds
    per thread hand-off, measured here (medians of ``rounds``).

    The loop is ``calls`` additions of squares, one core, no system call. A system call is
    ``getppid`` less a C call that makes none. A hand-off is half of a round trip between two
    threads over pipes, the pattern of an event loop passing work to an executor thread and
    getting the result back; it costs far more when the other thread's core is idle.
    """

    def per_call(fn: Any) -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - start) / calls

    syscall = statistics.median(per_call(os.getppid) - per_call(int) for _ in range(rounds))
    loop = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        sum(i * i for i in range(calls))
        loop.append((time.perf_counter_ns() - start) / 1e6)

    there_r, there_w = os.pipe()
    back_r, back_w = os.pipe()

    def echo() -> None:
        while os.read(there_r, 1) == b"x":
            os.write(back_w, b"x")

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        samples = []
        for _ in range(rounds):
            start = time.perf_counter_ns()
            for _ in range(trips):
                os.write(there_w, b"x")
                os.read(back_r, 1)
            samples.append((time.perf_counter_ns() - start) / trips / 2 / 1000)
        os.write(there_w, b"q")
        thread.join()
    finally:
        for fd in (there_r, there_w, back_r, back_w):
            os.close(fd)
    return {
        "python_loop_ms": round(statistics.median(loop), 3),
        "syscall_ns": round(max(syscall, 0.0), 1),
        "thread_handoff_us": round(statistics.median(samples), 2),
    }


IDENTITY = ("cpu", "cpu_vendor", "cpu_family", "cpu_model", "cores", "arch")


def same_host(recorded: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether a record was made on a host like this one (same CPU, cores, memory).

    A record without a CPU family (made before results named it) matches nothing: whether its
    figures compare with this host's cannot be told.
    """
    if not recorded or recorded.get("cpu_family") is None:
        return False
    # Guests of one size report a few hundred MB more or less.
    memory = abs((recorded.get("memory_gib") or 0) - (current.get("memory_gib") or 0)) < 1
    return memory and all(recorded.get(key) == current.get(key) for key in IDENTITY)


def code_label(repo: Path | None = None) -> str:
    """The commit a benchmark ran, as 12 hex digits, with ``+uncommitted (paths)`` when the
    checkout differed from it: a result must not credit a commit with code it did not hold.
    ``unknown`` outside a git checkout."""
    here = repo or Path(__file__).resolve().parent
    commit = (git_output(here, "rev-parse", "HEAD") or "").strip()
    if not commit:
        return "unknown"
    # Tracked files only: untracked outputs (results, caches) are not the code that ran.
    status = git_output(here, "status", "--porcelain", "--untracked-files=no") or ""
    changed = sorted(line[3:].strip() for line in status.splitlines() if line.strip())
    if not changed:
        return commit[:12]
    return f"{commit[:12]}+uncommitted ({', '.join(changed)})"


def loadavg() -> str:
    """The 1, 5 and 15-minute load averages as ``/proc/loadavg`` prints them ('' if absent)."""
    try:
        return " ".join(LOADAVG.read_text().split()[:3])
    except OSError:
        return ""


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
