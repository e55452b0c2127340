"""bench/diagnostics/native_predict.py: the forwarding check and its report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "diagnostics"))

import native_checks  # noqa: E402
import native_predict  # noqa: E402


def _answers(monkeypatch: pytest.MonkeyPatch, local: dict[str, Any], front: dict[str, Any]) -> None:
    def ask(address: str, method: str, request: bytes) -> tuple[str, str, bytes]:
        what = next(w for w, m, r in native_checks._probes(["u1", "u2", "u3"]) if r == request)
        table = front if address == "front" else local
        return table.get(what, ("OK", "", b""))  # an empty answer of each type

    monkeypatch.setattr(native_checks, "_ask", ask)


def test_forwarded_answers_must_equal_the_local_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    _answers(monkeypatch, {}, {})
    rows = native_checks.check_forwarded("front", "local", ["u1", "u2", "u3"])
    assert [r["request"] for r in rows][:2] == ["GetModelStatus", "GetModelMetadata"]
    assert all(r["same"] for r in rows)

    from tensorflow_serving.apis import predict_pb2

    other = predict_pb2.PredictResponse()
    other.model_spec.name = "another"
    _answers(monkeypatch, {}, {"Predict, 3 users": ("OK", "", other.SerializeToString())})
    with pytest.raises(SystemExit, match="Predict, 3 users"):
        native_checks.check_forwarded("front", "local", ["u1", "u2", "u3"])


def test_an_oversized_request_needs_the_same_refusal_code_not_the_same_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = {"Predict, 5 MiB request": ("RESOURCE_EXHAUSTED", "SERVER: larger than max", b"")}
    front = {"Predict, 5 MiB request": ("RESOURCE_EXHAUSTED", "larger than max", b"")}
    _answers(monkeypatch, local, front)
    rows = native_checks.check_forwarded("front", "local", ["u1", "u2", "u3"])
    assert rows[-1]["same"]

    _answers(monkeypatch, local, {"Predict, 5 MiB request": ("OK", "", b"answered")})
    with pytest.raises(SystemExit, match="5 MiB"):
        native_checks.check_forwarded("front", "local", ["u1", "u2", "u3"])


def test_the_report_names_both_servers_rates_and_what_was_forwarded(tmp_path: Path) -> None:
    def sweep(best: float) -> dict[str, Any]:
        run = {"p99_ms": 9.5, "server_cpu_us_per_request": 1200, "client_cpu_us_per_request": 400}
        return {"best": best, "rates": [{"rate": 250.0, "median_p99_ms": 9.5, "errors": 0,
                                         "held": True, "runs": [run]}]}  # fmt: skip

    gap = {"rounds": 2, "floor_p50_ms": [1.0, 1.2], "one_client_p50_ms": [2.0, 2.4],
           "median_gap_ms": 1.1}  # fmt: skip
    record = {
        "date": "2026-12-04T12:57:32+00:00", "finished": "2026-12-04T13:01:12+00:00",
        "command": "python bench/diagnostics/native_predict.py --out x", "code": "abc",
        "machine": {"cpu": "AMD EPYC", "cores": 2, "python": "3.11.7", "tensorflow": "2.21.0",
                    "grpcio": "1.85.3", "load_average_at_start": [0.5, 0.5, 0.5]},
        "load_average_at_end": [1.0, 0.6, 0.5], "model": {"kind": "two_stage"},
        "check": {"users": 64}, "gap": {"local": gap, "native": gap},
        "sweep": {"local": sweep(250.0), "native": sweep(1250.0)},
        "forwarded": [{"request": "Predict, unknown label",
                       "local": ["INVALID_ARGUMENT", "Unrecognized servable version label: x"],
                       "through_predictd": ["INVALID_ARGUMENT",
                                            "Unrecognized servable version label: x"]}],
        "reading": "Reading: ...",
    }  # fmt: skip
    out = tmp_path / "serving-native.md"
    native_predict.write_markdown(record, out)
    text = out.read_text()
    assert "| local | 1.100 ms | 2.200 ms | 1.100 ms | 250 req/s |" in text
    assert "| native | 1.100 ms | 2.200 ms | 1.100 ms | 1250 req/s |" in text
    assert "with it (predictd on the public port" in text
    assert "load average at start [0.5, 0.5, 0.5], at end [1.0, 0.6, 0.5]" in text
    assert (
        "| Predict, unknown label | INVALID_ARGUMENT Unrecognized servable version label: x |"
        in text
    )
