"""Serving latency of a top-10 Predict over gRPC (`make bench-serving`).

Serves SavedModels exported by the real pipeline code (bench/serving_models.py): the toy
ranking MLP (400 x 250 synthetic), the default model trained on MovieLens-100K, and a
two_stage model (towers pick 200 candidates, the ranking MLP orders them) trained on a generated
50,000-item catalogue. For each model:

1. the floor: the SavedModel's ``serving_default`` called in-process, loaded as the server
   and TF Serving load it (``recflow.savedmodel``: a session, the server's intra-op threads),
   one user per call, and batched (``--floor-batch`` users per call; per-user time reported);
2. one client in a closed loop over gRPC against ``recflow-model-server`` (a subprocess);
   the gap target is judged on *paired* rounds (:func:`paired_gap`): floor and one-client
   blocks alternate, so both halves of each difference see the same state of the host;
3. open-loop load at fixed arrival rates from one process (grpc.aio), latency measured from
   each request's *scheduled* send time, so a client falling behind shows up as latency
   (no coordinated omission). Each rate runs ``--repeats`` times (median p99 counts), rates in
   increasing order; a rate is held when its median p99 < 20 ms and no run had an error, and
   counted only if every lower rate was held (the first miss ends the sweep).

Writes ``<out>/serving.json`` and ``<out>/serving.md`` (rendered by serving_report.py).
Targets are reported, not asserted: one-client p50 at most 1 ms above the in-process floor;
p99 < 20 ms with no errors at >= 1,000 requests/s, load generator included on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from recflow.ops.machine import code_label

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402 (bench/loadgen.py, same folder)
from loadgen import PREDICT, machine, percentiles, start_server, stop_server  # noqa: E402
from serving_latency import (  # noqa: E402 (bench/serving_latency.py)
    GAP_ROUNDS,
    MODEL,
    closed_loop,
    make_request,
    measure_floor,
    paired_gap,
    status_loop,
)
from serving_report import (  # noqa: E402 (bench/serving_report.py)
    FLOOR_GAP_TARGET_MS,
    P99_TARGET_MS,
    RATE_TARGET,
    write_markdown,
)

ROOT = Path(__file__).resolve().parents[1]


async def _open_loop(address: str, users: list[str], rate: float, seconds: float) -> dict[str, Any]:
    import grpc

    requests = [make_request(u).SerializeToString() for u in users]
    total = int(rate * seconds)
    lat: list[float] = []
    errors: dict[str, int] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        # The serialized bytes are sent as-is: the generator spends no time re-encoding.
        predict = channel.unary_unary(PREDICT)
        for r in requests[:20]:
            await predict(r, timeout=10)

        async def one(i: int, scheduled: float) -> None:
            try:
                await predict(requests[i % len(requests)], timeout=5)
            except grpc.RpcError as exc:
                code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
                errors[code] = errors.get(code, 0) + 1
            lat.append(time.perf_counter() - scheduled)

        elapsed = await loadgen.open_loop(rate, total, one)
    return {
        "rate": rate,
        "seconds": round(elapsed, 2),
        "requests": total,
        "achieved_rps": round(total / elapsed, 1),
        "errors": sum(errors.values()),
        "error_codes": errors,
        **percentiles(lat),
    }


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc; the native front end is one)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (Linux /proc), to report
    CPU cost per request; predictd runs as the server's child."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(process_cpu_seconds(child) for child in child_pids(pid))


def open_loop(
    address: str, users: list[str], rate: float, seconds: float, server_pid: int
) -> dict[str, Any]:
    server0, client0 = process_cpu_seconds(server_pid), time.process_time()
    with loadgen.collector_paused():
        result = asyncio.run(_open_loop(address, users, rate, seconds))
    server1, client1 = process_cpu_seconds(server_pid), time.process_time()
    # CPU per request shows whether a rate is missed for lack of cores or for other reasons.
    result["server_cpu_us_per_request"] = round((server1 - server0) / result["requests"] * 1e6)
    result["client_cpu_us_per_request"] = round((client1 - client0) / result["requests"] * 1e6)
    return result


def server_flags(config: Path, args: argparse.Namespace) -> list[str]:
    """The model server's flags for a run: the shipped serving behaviour unless told otherwise."""
    flags = [
        f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models=true",
        "--file_system_poll_wait_seconds=0", f"--grpc_max_threads={args.grpc_threads}",
        f"--tensorflow_intra_op_parallelism={args.tf_intra_op}",
        f"--tensorflow_inter_op_parallelism={args.tf_inter_op}", f"--malloc={args.malloc}",
    ]  # fmt: skip
    if args.batching:
        flags += ["--enable_batching", f"--batching_parameters_file={args.batching_file}"]
    if args.native_frontend:
        flags.append("--native_frontend")
    return flags


def serve(model_dir: Path, work: Path, port: int, args: argparse.Namespace) -> Any:
    """The model server on ``model_dir`` as version 1, label ``stable``."""
    from recflow.promotion import install_version
    from recflow.serving.model_config import ModelEntry, write_entries

    base = work / "models" / MODEL
    install_version(model_dir, base, 1)
    config = work / "models.config"
    write_entries(config, [ModelEntry(MODEL, str(base), (1,), {"stable": 1})])
    return start_server(server_flags(config, args), port, work / "server.log", timeout=120)


def rate_sweep(
    address: str, users: list[str], args: argparse.Namespace, server_pid: int
) -> tuple[list[dict[str, Any]], float]:
    """Open-loop rates in increasing order, ``args.repeats`` runs each; stops at the first rate
    not held. Returns the per-rate records and the highest rate held with every lower one."""
    sweep, best = [], 0.0
    for rate in sorted(float(r) for r in args.rates.split(",") if r):
        runs = []
        for _ in range(args.repeats):
            r = open_loop(address, users, rate, args.seconds, server_pid)
            print(f"[bench]   open loop: {r}", flush=True)
            runs.append(r)
        record = rate_record(rate, runs)
        sweep.append(record)
        if not record["held"]:
            break
        best = rate
    return sweep, best


def rate_record(rate: float, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One rate's runs judged: held when their median p99 is under the target and no run had an
    error (the rule every serving benchmark here counts rates by)."""
    p99 = float(np.median([r["p99_ms"] for r in runs]))
    errors = sum(r["errors"] for r in runs)
    held = p99 < P99_TARGET_MS and errors == 0
    return {"rate": rate, "median_p99_ms": round(p99, 3), "errors": errors, "held": held,
            "runs": runs}  # fmt: skip


def bench_model(name: str, args: argparse.Namespace, cache: Path, work: Path) -> dict[str, Any]:
    from serving_models import build

    from recflow.net import free_port
    from recflow.serving.server import session_threads

    export, model = build(name, cache)
    users = model.pop("user_ids")
    print(f"[bench] {name}: {model}", flush=True)
    threads = session_threads(args.tf_intra_op, args.tf_inter_op)
    floor = measure_floor(export, users, args.closed_requests, threads=threads)
    batched = measure_floor(
        export, users, args.closed_requests, batch=args.floor_batch, threads=threads
    )
    print(f"[bench] {name} in-process floor: {floor}; batched: {batched}", flush=True)
    port = free_port()
    (work / name).mkdir(parents=True, exist_ok=True)
    process, command, server = serve(export, work / name, port, args)
    address = f"127.0.0.1:{port}"
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        one = closed_loop(address, users, args.closed_requests)
        print(f"[bench] {name} one client: {one}", flush=True)
        status = status_loop(address, args.closed_requests)
        print(f"[bench] {name} one client, GetModelStatus: {status}", flush=True)
        pairs = paired_gap(export, address, users, args.gap_rounds, threads=threads)
        print(f"[bench] {name} paired floor / one client: {pairs}", flush=True)
        # The load generator has TensorFlow loaded (the floor above): freeze what exists,
        # so its own full garbage collections (100+ ms) do not show up as server latency.
        gc.collect()
        gc.freeze()
        sweep, best = rate_sweep(address, users, args, process.pid)
    finally:
        stop_server(process, server, timeout=30)
        gc.unfreeze()
    gap = pairs["median_gap_ms"]
    return {
        "model": model,
        "server_command": " ".join(Path(c).name if c == sys.executable else c for c in command),
        "load_average_before_gRPC": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "floor": floor,
        "floor_batched": batched,
        "one_client": one,
        "status_rpc": status,
        "paired_gap": pairs,
        "open_loop": sweep,
        "targets": {
            "one_client_gap_ms": gap,
            "unpaired_gap_ms": round(one["p50_ms"] - floor["p50_ms"], 3),
            "one_client_gap_met": gap <= FLOOR_GAP_TARGET_MS,
            "max_rate_p99_under_20ms": best,
            "rate_met": best >= RATE_TARGET,
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--models", default="toy,ml100k,two_stage_50k")
    p.add_argument("--model-cache", default="", help="reuse/keep exports here (default: none)")
    p.add_argument("--rates", default="100,250,500,750,1000,1250,1500,2000")
    p.add_argument("--seconds", type=float, default=6.0, help="per open-loop run")
    p.add_argument("--repeats", type=int, default=3, help="runs per rate (median p99)")
    p.add_argument("--closed-requests", type=int, default=3000)
    p.add_argument("--floor-batch", type=int, default=32, help="users per batched floor call")
    p.add_argument("--gap-rounds", type=int, default=GAP_ROUNDS, help="paired floor/client rounds")
    p.add_argument("--grpc-threads", type=int, default=8)
    # One thread per op: the bench model runs ~190 small ops per call, for which handing work
    # to a second intra-op thread costs more CPU than it saves (measured ~40% less CPU per
    # batched call on 2 cores); the cores are better left to the gRPC loop and other batches.
    p.add_argument("--tf-intra-op", type=int, default=1, help="0 = TensorFlow's default")
    # -1: each batch's ops run in the thread that runs the batch (TensorFlow's negative
    # inter_op_parallelism_threads; TF Serving passes it on beside a positive intra-op count)
    # instead of a hand-off to the inter-op pool and back per call: 17-26% less CPU per call
    # of the 50k model in process (1 and 4 users, 2026-12-02 19:50 UTC).
    p.add_argument("--tf-inter-op", type=int, default=-1, help="0 = TensorFlow's default")
    p.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True)
    # The local server's fastest request path: predictd on the public port, the Python server
    # behind it (recflow.serving.native); --no-native-frontend measures Python's gRPC alone
    # (bench/diagnostics/native_predict.py compares the two).
    p.add_argument("--native-frontend", action=argparse.BooleanOptionalAction, default=True)
    # As shipped: jemalloc (make server-deps installs it). The server refuses to start without
    # it rather than quietly measuring glibc's malloc; --malloc=auto or system to compare.
    p.add_argument("--malloc", choices=("auto", "jemalloc", "system"), default="jemalloc")
    p.add_argument("--batching-file", default=str(ROOT / "serving" / "batching_parameters.txt"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    info = machine()
    results = {}
    code = code_label()
    with tempfile.TemporaryDirectory(prefix="recflow-bench-serving-") as tmp:
        cache = Path(args.model_cache) if args.model_cache else Path(tmp) / "models"
        for name in [m for m in args.models.split(",") if m]:
            results[name] = bench_model(name, args, cache, Path(tmp))
            print(f"[bench] {name}: {results[name]['targets']}", flush=True)
    result = {
        "date": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/serving.py "
        + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "code": code,
        "machine": info,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "seconds_per_run": args.seconds,
        "repeats": args.repeats,
        "models": results,
    }
    (out / "serving.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_markdown(result, out / "serving.md")
    print(f"[bench] wrote {out / 'serving.json'} and {out / 'serving.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
