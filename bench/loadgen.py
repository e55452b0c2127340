"""Load generation shared by the serving benchmarks (bench/serving.py, bench/soak.py).

* :func:`open_loop`: requests at a fixed arrival rate from one asyncio loop. Request ``i`` is
  due at ``start + i / rate`` whatever happened to the ones before it, and its latency counts
  from that scheduled time, so a generator or server falling behind shows up as latency (no
  coordinated omission).
* :func:`start_server`: ``recflow-model-server`` in a subprocess, ready when its port answers.
* :func:`percentiles` and :func:`machine`: what every results file reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

PREDICT = "/tensorflow.serving.PredictionService/Predict"


if TYPE_CHECKING:
    from recflow.serving.server_process import ServerProcess


def percentiles(latencies_s: Sequence[float]) -> dict[str, float]:
    if not latencies_s:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.asarray(latencies_s) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3), "max_ms": round(float(ms.max()), 3)}  # fmt: skip


def machine() -> dict[str, Any]:
    from recflow.ops.machine import describe, host_costs

    return {
        **describe("tensorflow", "grpcio"),
        "host_costs": host_costs(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a timed load runs, after one collection.

    A load generator that has TensorFlow and a model loaded (bench/serving.py measures the
    in-process floor first) holds millions of objects: one of its full collections stalled
    every request in flight for 0.20 s, in the generator, and those requests counted it as
    server latency (a probe at 1,000 requests/s, 2026-12-02 19:57 UTC, gc.callbacks in the
    generator; a separate process sleeping 1 ms in a loop saw no stall meanwhile)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def start_server(
    args: Sequence[str], port: int, log_path: Path, *, timeout: float = 180.0
) -> tuple[subprocess.Popen[bytes], list[str], ServerProcess]:
    """``recflow-model-server --port=PORT *args`` through the one server-process helper, output
    to ``log_path``; returns once the port answers (the process, its command, and the helper
    for :func:`stop_server`)."""
    from recflow.serving.server_process import ServerProcess, local_server_argv

    server = ServerProcess(local_server_argv(port, *args), port=port, log_file=log_path)
    server.start(timeout)
    assert server.process is not None
    return server.process, server.argv, server


def stop_server(
    process: subprocess.Popen[bytes], server: ServerProcess, timeout: float = 60
) -> None:
    server.stop(grace=timeout)


async def open_loop(
    rate: float,
    total: int,
    send: Callable[[int, float], Awaitable[None]],
    *,
    tick: Callable[[float], Sequence[Awaitable[None]]] | None = None,
) -> float:
    """Start ``send(i, scheduled)`` for i in 0..total-1 at ``rate`` per second on the running
    loop, each at its scheduled ``time.perf_counter()`` or as soon after as the loop can;
    ``tick(now)`` may add other requests at each step (e.g. hostile ones). Waits for all of
    them; returns the seconds from the first scheduled send to the last answer."""
    tasks: list[asyncio.Future[None]] = []
    start = time.perf_counter() + 0.05
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1) if now >= start else 0
        while sent < due:
            tasks.append(asyncio.ensure_future(send(sent, start + sent / rate)))
            sent += 1
        if tick is not None:
            tasks.extend(asyncio.ensure_future(extra) for extra in tick(now))
        if len(tasks) > 5000:  # keep the list short on long runs
            tasks = [t for t in tasks if not t.done()]
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start
