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


def test_the_gap_is_the_median_of_the_paired_rounds_differences() -> None:
    # Round 2's host is slower for both halves: its own difference, not the pooled p50s.
    floors = [[0.001, 0.001, 0.001], [0.003, 0.003, 0.003], [0.0012, 0.0012, 0.0012]]
    clients = [[0.0018, 0.0018, 0.0018], [0.0045, 0.0045, 0.0045], [0.0021, 0.0021, 0.0021]]
    pairs = serving.summarize_pairs(floors, clients)
    assert pairs["floor_p50_ms"] == [1.0, 3.0, 1.2]
    assert pairs["one_client_p50_ms"] == [1.8, 4.5, 2.1]
    assert pairs["gap_ms"] == [0.8, 1.5, 0.9]
    assert pairs["median_gap_ms"] == 0.9
    assert (pairs["rounds"], pairs["block"]) == (3, 3)


def test_the_gap_line_says_it_is_paired_and_keeps_the_unpaired_difference() -> None:
    record = {
        "targets": {"one_client_gap_ms": 0.9, "one_client_gap_met": True, "unpaired_gap_ms": 1.7},
        "paired_gap": serving.summarize_pairs([[0.001], [0.0012]], [[0.0018], [0.0022]]),
    }
    lines = serving._gap_lines(record)
    assert lines[0] == (
        "- one-client p50 - floor p50, median of 2 paired rounds of 1 calls each = 0.9 ms "
        "(target <= 1.0 ms): **met**"
    )
    assert (
        lines[1]
        == "  - per round (floor p50 / one-client p50 / gap, ms): 1.0 / 1.8 / 0.8, 1.2 / 2.2 / 1.0"
    )
    assert lines[2] == "  - the two long runs above, unpaired: 1.7 ms"


def test_a_record_from_before_the_paired_rounds_keeps_its_own_gap_line() -> None:
    record = {"targets": {"one_client_gap_ms": 1.42, "one_client_gap_met": False}}
    assert serving._gap_lines(record) == [
        "- one-client p50 - floor p50 = 1.42 ms (target <= 1.0 ms): **NOT met**"
    ]


def test_the_results_name_the_code_that_ran(tmp_path: Path) -> None:
    machine = {
        "host": "vm",
        "cpu": "AMD EPYC",
        "cores": 2,
        "load_average_at_start": [0.1, 0.2, 0.3],
    }
    machine |= {"python": "3.11.7", "tensorflow": "2.21.0", "grpcio": "1.85.3"}
    result = {
        "date": "2026-12-02T11:00:00+00:00",
        "finished": "2026-12-02T11:05:00+00:00",
        "command": "python bench/serving.py --out x",
        "code": "96e05aa1b2c3",
        "machine": machine,
        "load_average_at_end": [1.0, 1.0, 1.0],
        "seconds_per_run": 6.0,
        "repeats": 3,
        "models": {},
    }
    serving.write_markdown(result, tmp_path / "serving.md")
    lines = (tmp_path / "serving.md").read_text().splitlines()
    assert "- command: `python bench/serving.py --out x`, code 96e05aa1b2c3" in lines
