"""What the local server's Python gRPC stack costs: the server with and without its native front end.

    python bench/diagnostics/native_predict.py --out PREFIX [--model two_stage_50k]
    (make bench-serving-native)

A diagnostic beside `make bench-serving`: the same model served twice, as bench-serving starts
the local server, once as it was (`local`: Python's gRPC stack answers every request) and once
with ``--native_frontend`` (`native`: predictd, recflow.serving.native, answers the common
Predict itself and forwards everything else to the Python server behind it). Both are the
product's server; bench-serving measures the second.

The run, on the bench's own model (bench/serving_models.py) and with its own measurements:
1. the native server's answers equal the in-process SavedModel's for the same users, one at a
   time and 64 at once (merged batches), or the run stops;
2. what it forwards (other RPCs, a 3-user Predict, unknown model or label, a wrong input name)
   gets the Python server's own answer (status, message, the answer as a message), and a
   request over the receive limit is refused with the same code, or the run stops;
3. the paired one-client gap (bench/serving_latency.paired_gap) of each;
4. open-loop rates in increasing order, the two alternating run by run (three runs each per
   rate), each sweep ending at its first rate not held (median p99 < 20 ms, no errors), as
   bench-serving counts rates.

Writes ``PREFIX.json`` and ``PREFIX.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))
from loadgen import machine, stop_server  # noqa: E402 (bench/loadgen.py)
from serving import open_loop, parse_args, rate_record, serve, server_flags  # noqa: E402 (bench/serving.py)
from serving_latency import paired_gap  # noqa: E402
from serving_report import header_lines  # noqa: E402

from recflow.ops.machine import code_label  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from native_checks import THREADS, check_answers, check_forwarded  # noqa: E402


def sweep(servers: dict[str, tuple[str, int]], users: list[str], args: Any) -> dict[str, Any]:
    """Open-loop rates, servers alternating run by run; each server stops at its first miss."""
    out: dict[str, Any] = {name: {"rates": [], "best": 0.0, "open": True} for name in servers}
    for rate in sorted(float(r) for r in args.rates.split(",") if r):
        live = [n for n in servers if out[n]["open"]]
        if not live:
            break
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in live}
        for _ in range(args.repeats):
            for name in live:
                address, pid = servers[name]
                r = open_loop(address, users, rate, args.seconds, pid)
                print(f"[native] {name} {rate}/s: {r}", flush=True)
                runs[name].append(r)
        for name in live:
            record = rate_record(rate, runs[name])
            out[name]["rates"].append(record)
            if record["held"]:
                out[name]["best"] = rate
            else:
                out[name]["open"] = False
    return {name: {"rates": v["rates"], "best": v["best"]} for name, v in out.items()}


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [
        *header_lines(result, "Diagnostic: the local server with and without its native front end"),
        f"- model: {result['model']}",
        f"- answers checked: {result['check']}",
        "- servers: `local` is recflow's model server as `make bench-serving` starts it, but "
        "without `--native_frontend`; `native` is the same server with it (predictd on the "
        "public port: common Predicts served itself, batched by the same batching file, the "
        "same session threads; everything else forwarded to the Python server behind it)",
        "",
        "| server | in-process floor p50 (paired, median) | one-client p50 | gap (median of "
        f"{result['gap']['local']['rounds']} paired rounds) | highest rate held |",
        "|---|---|---|---|---|",
    ]
    for name in ("local", "native"):
        g, s = result["gap"][name], result["sweep"][name]
        lines.append(
            f"| {name} | {np.median(g['floor_p50_ms']):.3f} ms | "
            f"{np.median(g['one_client_p50_ms']):.3f} ms | {g['median_gap_ms']:.3f} ms | "
            f"{s['best']:.0f} req/s |"
        )
    lines += ["", "| server | rate | runs: p99 ms (server CPU us/req, client CPU us/req) | "
              "median p99 | held |", "|---|---|---|---|---|"]  # fmt: skip
    for name in ("local", "native"):
        for r in result["sweep"][name]["rates"]:
            runs = ", ".join(
                f"{x['p99_ms']} ({x['server_cpu_us_per_request']}, "
                f"{x['client_cpu_us_per_request']})"
                for x in r["runs"]
            )
            held = "yes" if r["held"] else "**no**"
            lines.append(f"| {name} | {r['rate']:.0f} | {runs} | {r['median_p99_ms']} | {held} |")
    lines += ["", "Forwarded by predictd to the Python server (status and message; answers compared "
              "as messages):", "", "| request | `local` | `native` |", "|---|---|---|"]  # fmt: skip
    for f in result["forwarded"]:
        lines.append(
            f"| {f['request']} | {' '.join(f['local'])} | {' '.join(f['through_predictd'])} |"
        )
    lines += ["", result["reading"], ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--out", required=True, help="results path prefix (PREFIX.json, PREFIX.md)")
    p.add_argument("--model", default="two_stage_50k", help="a bench/serving_models.py name")
    p.add_argument("--model-cache", default="", help="reuse/keep exports here (default: none)")
    p.add_argument("--rates", default="250,500,750,1000,1250,1500")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--gap-rounds", type=int, default=10)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from serving_models import build as build_model

    from recflow.net import free_port

    started = dt.datetime.now(dt.UTC)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="recflow-native-predict-") as tmp:
        work = Path(tmp)
        cache = Path(args.model_cache) if args.model_cache else work / "models"
        export, model = build_model(args.model, cache)
        users = model.pop("user_ids")
        ports = {"local": free_port(), "native": free_port()}
        started_servers = {
            name: serve(export, work / name, ports[name], parse_args([flag]))
            for name, flag in (("local", "--no-native-frontend"), ("native", "--native-frontend"))
        }
        servers = {name: (f"127.0.0.1:{ports[name]}", started_servers[name][0].pid)
                   for name in ports}  # fmt: skip
        try:
            check = check_answers(servers["native"][0], export, users)
            print(f"[native] answers: {check}", flush=True)
            forwarded = check_forwarded(servers["native"][0], servers["local"][0], users)
            print(f"[native] forwarded: {forwarded}", flush=True)
            gap = {}
            for name, (address, _) in servers.items():
                gap[name] = paired_gap(export, address, users, args.gap_rounds, threads=THREADS)
                print(f"[native] {name} gap: {gap[name]['median_gap_ms']} ms", flush=True)
            gc.collect()
            gc.freeze()
            rates = sweep(servers, users, args)
        finally:
            for process, _, helper in started_servers.values():
                stop_server(process, helper, timeout=30)
            gc.unfreeze()
    reading = (
        f"Reading: same model, host and load generator: the local server without its native "
        f"front end held {rates['local']['best']:.0f} req/s, with it "
        f"{rates['native']['best']:.0f} req/s; one-client gaps {gap['local']['median_gap_ms']} "
        f"and {gap['native']['median_gap_ms']} ms over the paired in-process floor (the load "
        "generator and the one client are Python gRPC in both; server CPU includes predictd's)."
    )
    result = {
        "date": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/diagnostics/native_predict.py "
        + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "code": code_label(),
        "machine": info,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "model": model,
        "server_flags": {
            name: server_flags(Path("models.config"), parse_args([flag]))
            for name, flag in (("local", "--no-native-frontend"), ("native", "--native-frontend"))
        },  # fmt: skip
        "check": check,
        "forwarded": forwarded,
        "gap": gap,
        "sweep": rates,
        "reading": reading,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_markdown(result, out.with_suffix(".md"))
    print(f"[native] wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}; {reading}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
