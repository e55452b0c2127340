"""bench/serving.py's results say what the kernel charges serving per request on the host."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import serving  # noqa: E402


def test_the_host_line_names_the_costs_the_clock_and_the_mitigations() -> None:
    machine = {
        "clocksource": "tsc",
        "cpu_mitigations": {"spec_rstack_overflow": "Vulnerable: Safe RET, no microcode"},
        "host_costs": {"python_loop_ms": 1.2, "syscall_ns": 412.5, "thread_handoff_us": 21.3},
    }
    assert serving._host_lines(machine) == [
        "- host: a fixed Python loop 1.2 ms, a system call 412.5 ns, a thread hand-off over a "
        "pipe 21.3 us (measured at "
        "start); clock source tsc; CPU mitigations: spec_rstack_overflow: Vulnerable: Safe RET, "
        "no microcode"
    ]


def test_a_record_from_before_the_probe_gets_no_kernel_line() -> None:
    assert serving._host_lines({"cpu": "AMD EPYC", "cores": 2}) == []
