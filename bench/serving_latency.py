"""Closed-loop latencies for bench/serving.py: the in-process floor of a SavedModel, one gRPC
client's Predict and GetModelStatus loops, and the paired floor / one-client rounds the gap
target is judged on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import percentiles  # noqa: E402 (bench/loadgen.py, same folder)

MODEL = "recommender"
TOP_K = 10
GAP_ROUNDS = 10
GAP_BLOCK = 300  # calls per floor block and requests per one-client block


def in_process(model_dir: Path, threads: tuple[int, int]) -> Callable[[list[str]], dict[str, Any]]:
    """``serving_default`` of ``model_dir`` loaded as the server loads it (a session with the
    server's (intra, inter) op threads), called with a list of user ids."""
    from recflow.savedmodel import load_signatures

    model = load_signatures(model_dir, intra_op_threads=threads[0], inter_op_threads=threads[1])

    def serve(users: list[str]) -> dict[str, Any]:
        ids = np.array([u.encode() for u in users], dtype=object)
        return model.signatures["serving_default"]({"user_id": ids})

    return serve


def measure_floor(
    model_dir: Path, users: list[str], n: int, batch: int = 1, threads: tuple[int, int] = (0, 0)
) -> dict[str, Any]:
    """In-process latency of ``serving_default`` with ``batch`` users per call."""
    serve = in_process(model_dir, threads)
    calls = [users[(i * batch) % len(users) :][:batch] for i in range(max(1, n // batch))]
    calls = [c if len(c) == batch else users[:batch] for c in calls]
    for c in calls[:20]:
        serve(c)
    lat = []
    cpu0 = time.process_time()
    for c in calls:
        t0 = time.perf_counter()
        serve(c)
        lat.append(time.perf_counter() - t0)
    # CPU time per call: what the call costs, less sensitive than latency to other jobs.
    cpu_ms = round((time.process_time() - cpu0) / len(calls) * 1e3, 4)
    per_user_ms = round(float(np.median(lat)) * 1e3 / batch, 4)
    return {"batch": batch, "calls": len(calls), **percentiles(lat),
            "p50_ms_per_user": per_user_ms, "cpu_ms_per_call": cpu_ms}  # fmt: skip


def make_request(user: str, label: str = "stable") -> Any:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.version_label = label
    request.model_spec.signature_name = "serving_default"
    tensor = request.inputs["user_id"]
    tensor.dtype = 7  # DT_STRING
    tensor.tensor_shape.dim.add(size=1)
    tensor.string_val.append(user.encode())
    return request


def _timed_calls(call: Callable[[int], object], n: int) -> dict[str, Any]:
    """One client's closed loop: 50 warm-up calls, then n timed ones; an RpcError is counted
    and timed, not raised, so one failed call does not void the run."""
    import grpc

    for i in range(50):
        call(i)
    lat, errors = [], 0
    for i in range(n):
        t0 = time.perf_counter()
        try:
            call(i)
        except grpc.RpcError:
            errors += 1
        lat.append(time.perf_counter() - t0)
    return {"requests": n, "errors": errors, **percentiles(lat)}


def closed_loop(address: str, users: list[str], n: int) -> dict[str, Any]:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    requests = [make_request(u) for u in users]
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def predict(i: int) -> None:
            response = stub.Predict(requests[i % len(requests)], timeout=10)
            assert len(response.outputs["item_ids"].string_val) == TOP_K

        return _timed_calls(predict, n)


def status_loop(address: str, n: int) -> dict[str, Any]:
    """One client's closed loop of GetModelStatus: a round trip through the same gRPC stack
    with no model call, the transport's share of the one-client gap."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    with grpc.insecure_channel(address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        return _timed_calls(lambda _: stub.GetModelStatus(request, timeout=10), n)


def paired_gap(
    model_dir: Path,
    address: str,
    users: list[str],
    rounds: int = GAP_ROUNDS,
    block: int = GAP_BLOCK,
    threads: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """One-client p50 minus the in-process floor p50, measured in ``rounds`` paired rounds.

    Each round times ``block`` in-process calls and ``block`` gRPC requests back to back
    (the order alternates between rounds), so the two p50s of a round share the host's state;
    on a shared VM the floor alone moved by 0.9 ms between consecutive runs of the same code
    (1.15 and 2.03 ms, 2026-12-02), more than the target it is compared with.

    Each round then times a *paced* floor block: the same in-process calls, each after an idle
    pause as long as that round's gap, so the model waits between calls as it does behind one
    gRPC client. Spaced calls of the 50k-item model ran 0.2-0.8 ms slower in process than back
    to back on a shared 2-vCPU host, also when the pause was spun rather than slept (a probe,
    2026-12-04 09:57 UTC), so likely its tables leave the CPU's caches between calls (not
    measured). The target is judged on the back-to-back floor, as the issue defines it; the
    paced floor says how much of a gap is the model running slower when spaced rather than
    the RPC path.
    """
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    serve = in_process(model_dir, threads)
    requests = [make_request(u) for u in users]

    def floor_block(start: int, pause: float = 0.0) -> list[float]:
        lat = []
        for i in range(start, start + block):
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            serve([users[i % len(users)]])
            lat.append(time.perf_counter() - t0)
        return lat

    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def client_block(start: int) -> list[float]:
            lat = []
            for i in range(start, start + block):
                t0 = time.perf_counter()
                response = stub.Predict(requests[i % len(requests)], timeout=10)
                if len(response.outputs["item_ids"].string_val) != TOP_K:
                    raise SystemExit(f"bench: expected {TOP_K} items from the server")
                lat.append(time.perf_counter() - t0)
            return lat

        floor_block(0)  # warm both paths
        client_block(0)
        floors, clients, paced = [], [], []
        for r in range(rounds):
            if r % 2 == 0:
                floors.append(floor_block(r * block))
                clients.append(client_block(r * block))
            else:
                clients.append(client_block(r * block))
                floors.append(floor_block(r * block))
            pause = max(0.0, float(np.median(clients[-1]) - np.median(floors[-1])))
            paced.append(floor_block(r * block, pause))
    return summarize_pairs(floors, clients, paced)


def _p50s_ms(blocks: list[list[float]]) -> list[float]:
    return [round(float(np.median(b)) * 1e3, 3) for b in blocks]


def summarize_pairs(
    floors: list[list[float]], clients: list[list[float]], paced: list[list[float]] | None = None
) -> dict[str, Any]:
    """Per round p50s (ms) of paired floor / one-client blocks (seconds), their differences
    and the median difference, which the gap target is judged on; with ``paced`` floor blocks
    (see :func:`paired_gap`), also the one-client p50 less the paced floor's."""
    floor_p50, client_p50 = _p50s_ms(floors), _p50s_ms(clients)
    gaps = [round(c - f, 3) for f, c in zip(floor_p50, client_p50, strict=True)]
    summary: dict[str, Any] = {
        "rounds": len(gaps),
        "block": len(floors[0]) if floors else 0,
        "floor_p50_ms": floor_p50,
        "one_client_p50_ms": client_p50,
        "gap_ms": gaps,
        "median_gap_ms": round(float(np.median(gaps)), 3),
    }
    if paced:
        paced_p50 = _p50s_ms(paced)
        over = [round(c - p, 3) for p, c in zip(paced_p50, client_p50, strict=True)]
        summary |= {
            "paced_floor_p50_ms": paced_p50,
            "gap_over_paced_ms": over,
            "median_gap_over_paced_ms": round(float(np.median(over)), 3),
        }
    return summary
