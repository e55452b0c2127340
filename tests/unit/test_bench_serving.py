"""bench/serving.py and serving_report.py: results say what serving costs per request on the host."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import serving  # noqa: E402
import serving_latency  # noqa: E402
import serving_report  # noqa: E402


def test_the_host_line_names_the_costs_the_clock_and_the_mitigations() -> None:
    machine = {
        "clocksource": "tsc",
        "cpu_mitigations": {"spec_rstack_overflow": "Vulnerable: Safe RET, no microcode"},
        "host_costs": {"python_loop_ms": 1.2, "syscall_ns": 412.5, "thread_handoff_us": 21.3},
    }
    assert serving_report.host_lines(machine) == [
        "- host: a fixed Python loop 1.2 ms, a system call 412.5 ns, a thread hand-off over a "
        "pipe 21.3 us (measured at "
        "start); clock source tsc; CPU mitigations: spec_rstack_overflow: Vulnerable: Safe RET, "
        "no microcode"
    ]


def test_a_record_from_before_the_probe_gets_no_kernel_line() -> None:
    assert serving_report.host_lines({"cpu": "AMD EPYC", "cores": 2}) == []


def test_the_gap_is_the_median_of_the_paired_rounds_differences() -> None:
    # Round 2's host is slower for both halves: its own difference, not the pooled p50s.
    floors = [[0.001, 0.001, 0.001], [0.003, 0.003, 0.003], [0.0012, 0.0012, 0.0012]]
    clients = [[0.0018, 0.0018, 0.0018], [0.0045, 0.0045, 0.0045], [0.0021, 0.0021, 0.0021]]
    pairs = serving_latency.summarize_pairs(floors, clients)
    assert pairs["floor_p50_ms"] == [1.0, 3.0, 1.2]
    assert pairs["one_client_p50_ms"] == [1.8, 4.5, 2.1]
    assert pairs["gap_ms"] == [0.8, 1.5, 0.9]
    assert pairs["median_gap_ms"] == 0.9
    assert (pairs["rounds"], pairs["block"]) == (3, 3)


def test_the_gap_line_says_it_is_paired_and_keeps_the_unpaired_difference() -> None:
    record = {
        "targets": {"one_client_gap_ms": 0.9, "one_client_gap_met": True, "unpaired_gap_ms": 1.7},
        "paired_gap": serving_latency.summarize_pairs([[0.001], [0.0012]], [[0.0018], [0.0022]]),
    }
    lines = serving_report.gap_lines(record)
    assert lines[0] == (
        "- one-client p50 - floor p50, median of 2 paired rounds of 1 calls each = 0.9 ms "
        "(target <= 1.0 ms): **met**"
    )
    assert (
        lines[1]
        == "  - per round (floor p50 / one-client p50 / gap, ms): 1.0 / 1.8 / 0.8, 1.2 / 2.2 / 1.0"
    )
    assert lines[2] == "  - the two long runs above, unpaired: 1.7 ms"


def test_the_paced_floor_splits_the_gap_and_is_reported_apart_from_the_target() -> None:
    floors = [[0.001], [0.0012]]
    clients = [[0.0025], [0.0026]]
    paced = [[0.0014], [0.0016]]  # the model slower when its calls are spaced
    pairs = serving_latency.summarize_pairs(floors, clients, paced)
    assert pairs["median_gap_ms"] == 1.45  # the target still reads the back-to-back floor
    assert pairs["paced_floor_p50_ms"] == [1.4, 1.6]
    assert pairs["gap_over_paced_ms"] == [1.1, 1.0]
    assert pairs["median_gap_over_paced_ms"] == 1.05
    record = {
        "targets": {"one_client_gap_ms": 1.45, "one_client_gap_met": False, "unpaired_gap_ms": 1.5},
        "paired_gap": pairs,
    }
    lines = serving_report.gap_lines(record)
    assert lines[0].endswith("= 1.45 ms (target <= 1.0 ms): **NOT met**")
    assert lines[3] == (
        "  - diagnostic, not the target: the floor *paced* like one client (each in-process call "
        "after a pause as long as its round's gap; per round p50 ms: 1.4, 1.6); one-client p50 "
        "- paced floor p50, median = 1.05 ms"
    )


def test_a_record_without_paced_blocks_has_no_paced_line() -> None:
    pairs = serving_latency.summarize_pairs([[0.001]], [[0.002]])
    assert "paced_floor_p50_ms" not in pairs
    record = {"targets": {"one_client_gap_ms": 1.0, "one_client_gap_met": True,
                          "unpaired_gap_ms": 1.0}, "paired_gap": pairs}  # fmt: skip
    assert len(serving_report.gap_lines(record)) == 3


def test_a_record_from_before_the_paired_rounds_keeps_its_own_gap_line() -> None:
    record = {"targets": {"one_client_gap_ms": 1.42, "one_client_gap_met": False}}
    assert serving_report.gap_lines(record) == [
        "- one-client p50 - floor p50 = 1.42 ms (target <= 1.0 ms): **NOT met**"
    ]


def _model_record(**extra: object) -> dict[str, object]:
    lat = {"p50_ms": 0.5, "p95_ms": 0.7, "p99_ms": 0.9, "max_ms": 2.0}
    return {
        "model": {"kind": "two_stage", "users": 10, "items": 50, "top_k": 10},
        "server_command": "python -m recflow.serving.server --port 1",
        "load_average_before_gRPC": [0.1, 0.1, 0.1],
        "load_average_after": [0.2, 0.2, 0.2],
        "floor": {"calls": 100, "cpu_ms_per_call": 0.4, **lat},
        "floor_batched": {
            "batch": 8,
            "calls": 10,
            "p50_ms_per_user": 0.1,
            "cpu_ms_per_call": 0.8,
            **lat,
        },
        "one_client": {"requests": 200, "errors": 0, **lat},
        "open_loop": [],
        "targets": {
            "one_client_gap_ms": 0.3,
            "one_client_gap_met": True,
            "max_rate_p99_under_20ms": 0,
            "rate_met": False,
        },
        **extra,
    }


def _rendered(tmp_path: Path, models: dict[str, object], **fields: object) -> list[str]:
    """serving.md's lines for a result with ``models`` (and any top-level ``fields``)."""
    result = {
        "date": "2026-12-03T11:00:00+00:00",
        "finished": "2026-12-03T11:05:00+00:00",
        "command": "python bench/serving.py",
        "code": "abc",
        "machine": {
            "host": "vm",
            "cpu": "AMD",
            "cores": 2,
            "load_average_at_start": [0, 0, 0],
            "python": "3.11",
            "tensorflow": "2.21.0",
            "grpcio": "1.85",
        },
        "load_average_at_end": [0, 0, 0],
        "seconds_per_run": 6.0,
        "repeats": 3,
        "models": models,
        **fields,
    }
    serving_report.write_markdown(result, tmp_path / "serving.md")
    return (tmp_path / "serving.md").read_text().splitlines()


def test_the_results_name_the_code_that_ran(tmp_path: Path) -> None:
    lines = _rendered(tmp_path, {}, command="python bench/serving.py --out x", code="96e05aa1b2c3")
    assert "- command: `python bench/serving.py --out x`, code 96e05aa1b2c3" in lines


def test_the_status_round_trip_gets_its_own_row_beside_predict(tmp_path: Path) -> None:
    status = {
        "requests": 300,
        "errors": 2,
        "p50_ms": 0.41,
        "p95_ms": 0.6,
        "p99_ms": 0.8,
        "max_ms": 1.5,
    }
    lines = _rendered(tmp_path, {"m": _model_record(status_rpc=status)})
    assert (
        "| one client, closed loop, GetModelStatus (no model call) | 300 | 2 | 0.41 | 0.6 | "
        "0.8 | 1.5 | | |"
    ) in lines
    older = _rendered(tmp_path, {"m": _model_record()})
    assert not [line for line in older if "GetModelStatus" in line]


def test_a_failed_call_in_the_closed_loop_is_counted_not_raised() -> None:
    import grpc

    def call(i: int) -> None:
        if i in (60, 70):  # warm-up calls are 0-49, so only timed calls fail
            raise grpc.RpcError()

    record = serving_latency._timed_calls(call, 100)
    assert record["requests"] == 100
    assert record["errors"] == 2


def test_the_server_runs_as_shipped_on_jemalloc_unless_told_otherwise(tmp_path: Path) -> None:
    # A machine without libjemalloc2 makes the server refuse to start instead of quietly
    # benchmarking glibc's malloc under the "as shipped" heading.
    flags = serving.server_flags(tmp_path / "models.config", serving.parse_args([]))
    assert "--malloc=jemalloc" in flags
    assert "--enable_batching" in flags
    compare = serving.server_flags(tmp_path / "c", serving.parse_args(["--malloc=system"]))
    assert "--malloc=system" in compare
