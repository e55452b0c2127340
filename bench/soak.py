"""Soak of recflow-model-server under hostile traffic (`make bench-soak`).

A MovieLens-100K-size model (seeded synthetic generator at 943 users x 1,682 items, ~106 events
per user; ranking MLP through the pipeline's own train/export code, top-10) is served with the
shipped CPU batching file. Then, for ``--minutes``:

* well-formed Predicts (one user, label ``stable``) at a fixed open-loop rate (grpc.aio,
  latency from each request's scheduled send time: no coordinated omission);
* a hot swap every ``--swap-seconds`` through ``recflow.promotion.Promoter`` (install a new
  version, deploy as canary, move ``stable``, drop the old one);
* one hostile request every ``--hostile-seconds``, in turn: 100,000 ids, a 5 MB message, wrong
  dtype, wrong rank, a scalar, a broadcast shape, garbage bytes, forged model names, unknown
  label and signature, and a client that cancels mid-request;
* the server's RSS every 5 s.

Before the soak, the single-request bound: RSS and peak RSS (VmHWM) of a fresh server around one
request of the largest allowed size, with batching (max_batch_size) and without (the default
--max_request_rows).

Reports errors of well-formed requests (goal 0), their p50/p99, hostile outcomes by code, and
the RSS slope after warm-up (least squares, MB/min; goal below soak_report's ``RSS_SLOPE_GOAL``). Writes
``<out>/soak.json`` and ``<out>/soak.md`` with command, machine, date and load averages.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import (  # noqa: E402 (bench/loadgen.py, same folder)
    PREDICT,
    machine,
    open_loop,
    percentiles,
    start_server,
    stop_server,
)
from soak_report import (  # noqa: E402 (bench/soak_report.py)
    slope_mb_per_min,
    swap_steps,
    window_slopes,
    write_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "recommender"
TOP_K = 10
FORGED = 'evil"} 1\nfake_metric{a="b'


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def export_models(work: Path, args: argparse.Namespace) -> tuple[list[Path], dict[str, Any]]:
    """Two ranking MLPs (different seeds) on the ML-100K-size synthetic data."""
    from recflow.config import SyntheticConfig, TrainConfig
    from recflow.data import generate_synthetic
    from recflow.features import build_features
    from recflow.features.split import split_leave_last_out
    from recflow.models import export_model, train_ranking_mlp

    synthetic = SyntheticConfig(
        n_users=args.users, n_items=args.items, mean_events_per_user=args.events_per_user
    )
    data = generate_synthetic(synthetic)
    split = split_leave_last_out(data.interactions)
    features = build_features(split.train, data.items, data.users)
    users = [str(u) for u in features.user_ids]
    dirs = []
    for seed in (1, 2):
        out = work / f"export-{seed}"
        if (out / "saved_model.pb").is_file():  # --work reuses earlier exports
            dirs.append(out)
            continue
        trained = train_ranking_mlp(
            features, TrainConfig(epochs=args.epochs, seed=seed), progress=lambda _: None
        )
        export_model(trained, features, out, top_k=TOP_K, warmup_user_ids=users[:8])
        dirs.append(out)
    info = {
        "kind": "ranking_mlp",
        "epochs": args.epochs,
        "users": features.n_users,
        "items": features.n_items,
        "events": len(data.interactions),
        "top_k": TOP_K,
        "user_ids": users,
    }
    return dirs, info


def predict_bytes(users: Any, **spec: Any) -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    r = predict_pb2.PredictRequest()
    r.model_spec.name = spec.pop("name", MODEL)
    r.model_spec.signature_name = spec.pop("signature", "serving_default")
    label = spec.pop("label", "stable")
    if label is not None:  # None: the latest version, as a client naming no label asks
        r.model_spec.version_label = label
    r.inputs["user_id"].CopyFrom(tf.make_tensor_proto(users, dtype=spec.pop("dtype", tf.string)))
    if "dims" in spec:
        r.inputs["user_id"].tensor_shape.dim[0].size = spec.pop("dims")
    return bytes(r.SerializeToString())


def hostile_requests() -> list[tuple[str, bytes | None, set[str]]]:
    """(name, serialized request or None for 'cancel mid-request', acceptable status codes)."""
    import tensorflow as tf

    return [
        ("100k_ids", predict_bytes([f"u{i}" for i in range(100_000)]), {"INVALID_ARGUMENT"}),
        ("5MB_message", predict_bytes(["x" * (5 * 1024 * 1024)]), {"RESOURCE_EXHAUSTED"}),
        ("wrong_dtype", predict_bytes([1.0], dtype=tf.float32), {"INVALID_ARGUMENT"}),
        ("rank_2", predict_bytes([["1", "2"]]), {"INVALID_ARGUMENT"}),
        ("scalar", predict_bytes("1"), {"INVALID_ARGUMENT"}),
        ("broadcast_1e9", predict_bytes(["1"], dims=10**9), {"INVALID_ARGUMENT"}),
        ("garbage_bytes", bytes(range(256)) * 8, {"INTERNAL", "UNKNOWN", "INVALID_ARGUMENT"}),
        ("forged_model_name", predict_bytes(["1"], name=FORGED, label=None), {"NOT_FOUND"}),
        ("unknown_label", predict_bytes(["1"], label="nope"), {"INVALID_ARGUMENT"}),
        ("unknown_signature", predict_bytes(["1"], signature="x"), {"FAILED_PRECONDITION"}),
        ("unicode_ids", predict_bytes(["ユーザー😀", b"\xff\xfe"]), {"OK"}),
        ("cancel_mid_request", None, {"CANCELLED"}),
    ]


def serve(work: Path, config: Path, port: int, extra: list[str]) -> Any:
    flags = [
        f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models=true",
        "--file_system_poll_wait_seconds=0", "--tensorflow_intra_op_parallelism=1", *extra,
    ]  # fmt: skip
    return start_server(flags, port, work / f"server-{port}.log")


def single_request_bound(
    export: Path, users: list[str], work: Path, batching: list[str]
) -> list[dict[str, Any]]:
    """RSS and peak RSS of a fresh server around one request of the largest allowed size."""
    import grpc

    from recflow.net import free_port
    from recflow.promotion import install_version
    from recflow.serving.limits import DEFAULT_MAX_REQUEST_ROWS
    from recflow.serving.model_config import ModelEntry, write_entries

    base = work / "probe" / MODEL
    install_version(export, base, 1)
    config = work / "probe.config"
    write_entries(config, [ModelEntry(MODEL, str(base), (1,), {"stable": 1})])
    out = []
    for name, extra, rows in (
        ("batching (shipped CPU file)", batching, 64),
        ("no batching (default --max_request_rows)", [], DEFAULT_MAX_REQUEST_ROWS),
        ("no batching, --max_request_rows=1000", ["--max_request_rows=1000"], 1000),
    ):
        port = free_port()
        process, command, log = serve(work, config, port, extra)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(PREDICT)
                for _ in range(20):  # the 1-row path warmed up
                    call(predict_bytes([random.choice(users)]), timeout=30)
                time.sleep(1.0)
                before = (rss_kb(process.pid), rss_kb(process.pid, "VmHWM"))
                t0 = time.perf_counter()
                call(predict_bytes(random.choices(users, k=rows)), timeout=60)
                seconds = time.perf_counter() - t0
                time.sleep(1.0)
                after = (rss_kb(process.pid), rss_kb(process.pid, "VmHWM"))
                t0 = time.perf_counter()
                try:
                    call(predict_bytes([f"u{i}" for i in range(rows + 1)]), timeout=60)
                    refused = "accepted"
                except grpc.RpcError as exc:
                    refused = exc.code().name
                over_ms = (time.perf_counter() - t0) * 1e3
        finally:
            stop_server(process, log)
        out.append({
            "config": name, "rows": rows, "request_seconds": round(seconds, 3),
            "rss_before_mb": round(before[0] / 1024, 1), "rss_after_mb": round(after[0] / 1024, 1),
            "peak_rss_growth_mb": round((after[1] - max(before[1], before[0])) / 1024, 1),
            "rss_growth_mb": round((after[0] - before[0]) / 1024, 1),
            "one_row_over_limit": refused, "one_row_over_limit_ms": round(over_ms, 1),
        })  # fmt: skip
        print(f"[soak] single-request bound: {out[-1]}", flush=True)
    return out


class Load:
    """Open-loop well-formed traffic plus hostile requests, on one asyncio loop (own thread)."""

    def __init__(self, address: str, users: list[str], args: argparse.Namespace) -> None:
        self.address = address
        self.users = users
        self.args = args
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self.hostile: Counter[tuple[str, str]] = Counter()
        self.hostile_ms: dict[str, list[float]] = {}
        self.unexpected: list[str] = []

    async def run(self, seconds: float) -> None:
        import grpc

        rng = random.Random(0)
        good = [predict_bytes([u]) for u in self.users]
        hostile = hostile_requests()
        async with grpc.aio.insecure_channel(self.address) as channel:
            call = channel.unary_unary(PREDICT)

            async def one(req: bytes, scheduled: float) -> None:
                try:
                    await call(req, timeout=10)
                except grpc.RpcError as exc:
                    self.errors[exc.code().name] += 1
                self.latencies.append(time.perf_counter() - scheduled)

            async def bad(name: str, req: bytes | None, ok: set[str]) -> None:
                t0 = time.perf_counter()
                code = "OK"
                try:
                    if req is None:  # a client that goes away while the server works
                        pending = call(predict_bytes(rng.choices(self.users, k=64)), timeout=10)
                        await asyncio.sleep(0.0005)
                        pending.cancel()
                        await pending
                    else:
                        await call(req, timeout=10)
                except asyncio.CancelledError:
                    code = "CANCELLED"
                except grpc.RpcError as exc:
                    code = exc.code().name
                self.hostile[(name, code)] += 1
                self.hostile_ms.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
                if code not in ok and not (req is None and code == "OK"):
                    self.unexpected.append(f"{name}: {code}")

            total = int(self.args.rate * seconds)
            next_bad, k = time.perf_counter(), 0

            def send(i: int, scheduled: float) -> Any:
                self.sent = i + 1
                return one(good[rng.randrange(len(good))], scheduled)

            def tick(now: float) -> list[Any]:  # one hostile request every --hostile-seconds
                nonlocal next_bad, k
                if now < next_bad:
                    return []
                name, req, ok = hostile[k % len(hostile)]
                k += 1
                next_bad += self.args.hostile_seconds
                return [bad(name, req, ok)]

            await open_loop(self.args.rate, total, send, tick=tick)


def soak(exports: list[Path], users: list[str], work: Path, args: argparse.Namespace,
         batching: list[str]) -> dict[str, Any]:  # fmt: skip
    from recflow.net import free_port
    from recflow.promotion import Promoter
    from recflow.serving.client import ServingClient
    from recflow.serving.model_config import write_entries

    config = work / "models.config"
    write_entries(config, [])
    port = free_port()
    process, command, log = serve(work, config, port, batching)
    address = f"127.0.0.1:{port}"
    swaps: list[dict[str, Any]] = []
    samples: list[tuple[float, float]] = []
    load = Load(address, users, args)
    try:
        client = ServingClient(address, timeout=120)
        promoter = Promoter(client, config, MODEL, work / "models", load_timeout=300)
        promoter.deploy_canary(exports[0], 1)
        promoter.promote_stable(1)
        thread = threading.Thread(
            target=lambda: asyncio.run(load.run(args.minutes * 60)), name="load", daemon=True
        )
        t0 = time.monotonic()
        thread.start()
        version, next_swap, next_sample = 1, t0 + args.swap_seconds, t0
        # A swap due as the load ends has no traffic after it, and the last RSS sample would
        # fall on the moment two versions are both loaded: swaps stop half an interval before.
        last_swap = t0 + args.minutes * 60 - args.swap_seconds / 2
        while thread.is_alive():
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - t0, rss_kb(process.pid) / 1024))
                next_sample += 5.0
            if now >= next_swap and next_swap <= last_swap:
                version += 1
                s0 = time.monotonic()
                promoter.deploy_canary(exports[(version - 1) % 2], version)
                promoter.promote_stable(version)
                swaps.append({"at_s": round(s0 - t0, 1), "version": version,
                              "seconds": round(time.monotonic() - s0, 2)})  # fmt: skip
                print(f"[soak] swap: {swaps[-1]}", flush=True)
                next_swap += args.swap_seconds
            thread.join(timeout=0.5)
        samples.append((time.monotonic() - t0, rss_kb(process.pid) / 1024))
        client.close()
        alive = process.poll() is None
    finally:
        stop_server(process, log)
    hostile_ms = {k: round(float(np.percentile(v, 99)), 1) for k, v in load.hostile_ms.items()}
    return {
        "server_command": " ".join(Path(c).name if c == sys.executable else c for c in command),
        "well_formed": {"requests": load.sent, "errors": sum(load.errors.values()),
                        "error_codes": dict(load.errors), **percentiles(load.latencies)},
        "hostile": {"requests": sum(load.hostile.values()),
                    "outcomes": {f"{n}:{c}": v for (n, c), v in sorted(load.hostile.items())},
                    "unexpected": load.unexpected[:20], "p99_ms_by_kind": hostile_ms},
        "swaps": swaps,
        "rss_mb": {"start": round(samples[0][1], 1), "end": round(samples[-1][1], 1),
                   "max": round(max(mb for _, mb in samples), 1),
                   "slope_after_warmup_mb_per_min": slope_mb_per_min(samples, args.warmup_seconds),
                   "slope_by_window": window_slopes(samples, min(args.swap_seconds, 120.0)),
                   "swap_steps": swap_steps(samples, [w["at_s"] for w in swaps]),
                   "samples": [(round(t, 1), round(mb, 1)) for t, mb in samples]},
        "server_alive_at_end": alive,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=100.0, help="well-formed requests per second")
    p.add_argument("--swap-seconds", type=float, default=120.0)
    p.add_argument("--hostile-seconds", type=float, default=1.0)
    p.add_argument("--warmup-seconds", type=float, default=120.0)
    p.add_argument("--users", type=int, default=943)
    p.add_argument("--items", type=int, default=1682)
    p.add_argument("--events-per-user", type=int, default=106)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--skip-bound", action="store_true", help="skip the single-request bound")
    p.add_argument("--work", default="", help="folder caching the trained exports")
    p.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--batching-file", default=str(ROOT / "serving" / "batching_parameters.txt"))
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    info = machine()
    batching = (
        ["--enable_batching", f"--batching_parameters_file={args.batching_file}"]
        if args.batching
        else []
    )
    with tempfile.TemporaryDirectory(prefix="recflow-bench-soak-") as tmp:
        work = Path(tmp)
        if args.work:  # keep the trained exports between runs
            Path(args.work).mkdir(parents=True, exist_ok=True)
            for seed in (1, 2):
                cached = Path(args.work) / f"export-{seed}"
                if cached.is_dir():
                    shutil.copytree(cached, work / f"export-{seed}")
        exports, model = export_models(work, args)
        users = model.pop("user_ids")
        if args.work:
            for e in exports:
                if not (Path(args.work) / e.name).exists():
                    shutil.copytree(e, Path(args.work) / e.name)
        print(f"[soak] models exported: {model}", flush=True)
        bound = [] if args.skip_bound else single_request_bound(exports[0], users, work, batching)
        result = soak(exports, users, work, args, batching)
    result_all = {
        "date": started.isoformat(timespec="seconds"),
        "command": "python bench/soak.py "
        + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": info,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "args": vars(args),
        "model": model,
        "single_request": bound,
        "soak": result,
    }
    (out / "soak.json").write_text(json.dumps(result_all, indent=2) + "\n", encoding="utf-8")
    write_markdown(result_all, out / "soak.md")
    w, rss = result["well_formed"], result["rss_mb"]
    print(f"[soak] wrote {out / 'soak.json'}: well-formed errors {w['errors']}, p99 "
          f"{w['p99_ms']} ms, RSS slope {rss['slope_after_warmup_mb_per_min']} MB/min")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
