"""What the local server's Python gRPC stack costs: Predict served without Python, in front of it.

    python bench/diagnostics/native_predict.py --out PREFIX [--model two_stage_50k]
    (make bench-serving-native: installs the Debian packages it builds with, then runs it)

A diagnostic beside `make bench-serving`, and a trial of one architecture for the local server:
``native_predict/predictd.c`` (gRPC's C core and TensorFlow's C API) takes the public port,
answers the common Predict itself (a servable of the table its standard input sets, here the
bench's one version; one user id; batched as requests queue on ``--workers`` threads, padded
to powers of two like ``allowed_batch_sizes``) and forwards every other request and RPC
unchanged to the local server behind it, whose answer it relays. It is built here from the
installed protos (protoc-c) and TensorFlow's own C library. Nothing keeps its table in step
with the local server's models and it keeps no metrics: not the product's server.

The run, on the bench's own model (bench/serving_models.py) and with its own measurements:
1. predictd's own answers equal the in-process SavedModel's for the same users, one at a time
   and 64 at once (merged batches), or the run stops;
2. what it forwards (other RPCs, a 3-user Predict, unknown model or label, a wrong input name)
   gets the local server's answer byte for byte, and a request over the receive limit is
   refused with the same code, or the run stops;
3. the paired one-client gap (bench/serving_latency.paired_gap) against the local server
   directly and through predictd;
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
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))
from loadgen import machine, stop_server  # noqa: E402 (bench/loadgen.py)
from serving import open_loop, parse_args, rate_record, serve  # noqa: E402 (bench/serving.py)
from serving_latency import MODEL, paired_gap  # noqa: E402
from serving_report import header_lines  # noqa: E402

from recflow.ops.machine import code_label  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from native_checks import THREADS, check_answers, check_forwarded  # noqa: E402

SOURCES = Path(__file__).resolve().parent / "native_predict"


def _descriptor_set() -> bytes:
    """predict.proto and its imports as a FileDescriptorSet, from the installed Python protos.

    protoc-c 1.4 (Debian 12) refuses proto3 ``optional`` fields, so they are made plain fields:
    the wire format is the same; only presence tracking of fields predictd never reads is lost.
    """
    from google.protobuf import descriptor_pb2
    from tensorflow_serving.apis import predict_pb2

    files: dict[str, Any] = {}

    def add(fd: Any) -> None:
        if fd.name in files:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files[fd.name] = proto

    def plain(messages: Any) -> None:
        for message in messages:
            synthetic = set()
            for field in message.field:
                if field.proto3_optional:
                    synthetic.add(field.oneof_index)
                    field.proto3_optional = False
                    field.ClearField("oneof_index")
            kept = [o for i, o in enumerate(message.oneof_decl) if i not in synthetic]
            del message.oneof_decl[:]
            message.oneof_decl.extend(kept)
            plain(message.nested_type)

    add(predict_pb2.DESCRIPTOR)
    for proto in files.values():
        plain(proto.message_type)
    return descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString()


def build(work: Path) -> Path:
    """Compile predictd into ``work``; returns the binary."""
    missing = [t for t in ("gcc", "protoc-c") if shutil.which(t) is None]
    missing += [h for h in ("/usr/include/grpc/grpc.h", "/usr/include/protobuf-c/protobuf-c.h")
                if not Path(h).exists()]  # fmt: skip
    if missing:
        raise SystemExit(
            f"native_predict: missing {', '.join(missing)}; run `make native-deps` (as root: it "
            "installs the Debian packages predictd builds with, listed there)"
        )
    import tensorflow as tf

    gen = work / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    protos = _descriptor_set()
    (work / "protos.pb").write_bytes(protos)
    from google.protobuf import descriptor_pb2

    names = [f.name for f in descriptor_pb2.FileDescriptorSet.FromString(protos).file]
    subprocess.run(["protoc-c", f"--descriptor_set_in={work / 'protos.pb'}",
                    f"--c_out={gen}", *names], check=True)  # fmt: skip
    binary = work / "predictd"
    include = Path(tf.__file__).parent / "include"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), *map(str, sorted(SOURCES.glob("*.c"))),
                    *map(str, sorted(gen.rglob("*.c"))), f"-I{gen}", f"-I{include}", f"-I{SOURCES}",
                    "-lgrpc", "-lgpr", "-lprotobuf-c", "-lpthread", "-ldl"], check=True)  # fmt: skip
    return binary


def signature_tensors(export: Path) -> tuple[str, list[str]]:
    """``serving_default``'s input and outputs as predictd's KEY=OP:INDEX arguments."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((export / "saved_model.pb").read_bytes())
    sig = saved.meta_graphs[0].signature_def["serving_default"]
    if len(sig.inputs) != 1:
        raise SystemExit(f"native_predict: expected one input, found {sorted(sig.inputs)}")
    (key, tensor), *_ = sig.inputs.items()
    return f"{key}={tensor.name}", [f"{k}={t.name}" for k, t in sorted(sig.outputs.items())]


def max_batch_rows() -> int:
    """Rows one merged batch may gather, from the batching file the local server ships with."""
    from recflow.serving.batching import BatchingOptions
    from recflow.serving.tfs_protos import read_batching_parameters

    params = read_batching_parameters(parse_args([]).batching_file)
    return BatchingOptions.from_proto(params).max_execution_rows


def start_native(
    binary: Path, export: Path, port: int, log: Path, workers: int, backend: str
) -> subprocess.Popen[bytes]:
    """predictd on ``port`` in front of the local server at ``backend``, serving ``export`` as
    the bench serves it (version 1, label stable), with the local server's receive limit. It
    runs while its standard input stays open."""
    import tensorflow as tf

    from recflow.serving.limits import GRPC_DEFAULT_MAX_RECEIVE_BYTES

    tf_lib = Path(tf.__file__).parent / "libtensorflow_cc.so.2"
    env = dict(os.environ, TF_CC_LIB=str(tf_lib), LD_LIBRARY_PATH=str(tf_lib.parent))
    argv = [str(binary), str(port), backend, str(GRPC_DEFAULT_MAX_RECEIVE_BYTES), str(workers),
            str(max_batch_rows())]  # fmt: skip
    process = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=log.open("wb"))  # fmt: skip
    answer = publish(process, [(MODEL, 1, export)], {(MODEL, "stable"): 1})
    if not answer.startswith("ok"):
        process.kill()
        raise SystemExit(f"native_predict: predictd refused its table: {answer!r}; see {log}")
    return process


def publish(
    process: subprocess.Popen[bytes],
    servables: list[tuple[str, int, Path]],
    labels: dict[tuple[str, str], int],
) -> str:
    """Make ``servables`` (name, version, SavedModel) and ``labels`` predictd's whole table:
    its answer, "ok ..." once requests see the new table or "error ..." with the old one kept."""
    lines = []
    for name, version, export in servables:
        tensor_in, tensors_out = signature_tensors(export)
        lines.append(
            "\t".join(["servable", name, str(version), str(export), tensor_in, *tensors_out])
        )
    lines += [f"label\t{name}\t{label}\t{version}" for (name, label), version in labels.items()]
    return commit(process, lines)


def commit(process: subprocess.Popen[bytes], lines: list[str]) -> str:
    """Send table ``lines`` and ``commit`` to predictd; its one-line answer."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(("\n".join([*lines, "commit"]) + "\n").encode())
    process.stdin.flush()
    return process.stdout.readline().decode().strip()


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
        *header_lines(result, "Diagnostic: the local server and predictd in front of it"),
        f"- model: {result['model']}",
        f"- answers checked: {result['check']}",
        "- servers: `local` is recflow's model server as `make bench-serving` starts it; "
        "`native` is bench/diagnostics/native_predict/predictd.c in front of that local server "
        f"(common Predicts served itself on {result['workers']} model threads, batches up to "
        f"{result['max_batch_rows']} rows padded to powers of two, the same session threads; "
        "everything else forwarded)",
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
    lines += ["", "Forwarded through predictd (status and message; answers compared byte for byte):",
              "", "| request | local server | through predictd |", "|---|---|---|"]  # fmt: skip
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
    # One per core: with 4 (the local server's num_batch_threads) predictd held 1,000 and then
    # 750 req/s, with 2 it held 1,250 (one run each, 2026-12-04 12:38-12:50 UTC, this host):
    # fewer threads than cores' worth of queue make larger batches, less CPU per request.
    p.add_argument("--workers", type=int, default=2, help="predictd's model threads")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from serving_models import build as build_model

    from recflow.net import free_port

    started = dt.datetime.now(dt.UTC)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="recflow-native-predict-") as tmp:
        work = Path(tmp)
        binary = build(work / "build")
        cache = Path(args.model_cache) if args.model_cache else work / "models"
        export, model = build_model(args.model, cache)
        users = model.pop("user_ids")
        local_port = free_port()
        local, _, helper = serve(export, work / "local", local_port, parse_args([]))
        native_port = free_port()
        native = start_native(binary, export, native_port, work / "predictd.log", args.workers,
                              f"127.0.0.1:{local_port}")  # fmt: skip
        servers = {"local": (f"127.0.0.1:{local_port}", local.pid),
                   "native": (f"127.0.0.1:{native_port}", native.pid)}  # fmt: skip
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
            native.kill()
            native.wait()
            stop_server(local, helper, timeout=30)
            gc.unfreeze()
    reading = (
        f"Reading: same model, host and load generator: the local server held "
        f"{rates['local']['best']:.0f} req/s, predictd in front of it "
        f"{rates['native']['best']:.0f} req/s; one-client gaps {gap['local']['median_gap_ms']} "
        f"and {gap['native']['median_gap_ms']} ms over the paired in-process floor (the load "
        "generator and the one client are Python gRPC in both). What predictd serves itself "
        "is the benchmark's whole load, so these figures say what a native request path could "
        "reach with the local server kept for everything else; they are not the local "
        "server's own."
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
        "workers": args.workers,
        "max_batch_rows": max_batch_rows(),
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
