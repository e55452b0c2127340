"""Quality benchmark under the pre-registered protocol in bench/PROTOCOL.md.

    python bench/quality.py --data ../shared/datasets/movielens-100k --out bench/results --final
    python bench/quality.py ... --reuse                 # cached selection (not for quoting)
    python bench/quality.py ... --groups ms:family      # some groups only (not for quoting)

Two runs in one command: a **selection run** (inner folds of the training part only; every
choice, the headline model included; cached under var/bench-quality by protocol hash) and an
**evaluation run** that trains the chosen settings with the protocol's seeds and scores the
test split once. Each piece runs in its own subprocess (own peak memory, no TensorFlow state
shared). The parent compares rows on per-user arrays that carry user ids and the protocol
hash (paired t-tests over users, Holm over every comparison reported) and writes
quality.json and quality.md. ``--final`` refuses ``--reuse`` and subsets: README quotes only a
``--final`` run. The folder may hold MovieLens-100K (u.data) or MovieLens-1M (ratings.dat).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from quality_lib import SMOKE_ENV, protocol_hash, protocol_spec

GROUP_ORDER = (
    "ms:family", "loo:sasrec", "loo:family", "ms:neumf", "ms:ranking_mlp", "loo:neumf",
    "loo:ranking_mlp", "loo:sasrec_sqn", "ms:ranking_mlp+dp", "loo:ranking_mlp+dp",
)  # fmt: skip
FAMILY = ("ease", "user_ease", "multvae", "blend", "popularity")


def machine() -> dict[str, Any]:
    from recflow.ops.machine import describe

    return describe("numpy", "pandas", "scipy", "tensorflow", "keras")


def _thread_env() -> dict[str, str]:
    n = str(os.cpu_count() or 1)
    return {
        **os.environ,
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }


def _subprocess(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        result = Path(tmp.name)
    cmd = [sys.executable, __file__, "--data", str(args.data), "--out", str(args.out),
           "--result", str(result), *extra]  # fmt: skip
    load = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_thread_env())
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return {
            "error": done.stderr[-1500:],
            "wall_seconds": round(time.perf_counter() - t0, 1),
        }
    out: dict[str, Any] = json.loads(result.read_text())
    result.unlink()
    out["run_seconds"] = round(time.perf_counter() - t0, 1)
    out["load_1m_before"] = load
    return out


def _cache_path(sha: str, protocol: str, data: Path) -> Path:
    home = Path(os.environ.get("RECFLOW_HOME", "var"))
    smoke = "-smoke" if os.environ.get(SMOKE_ENV) else ""
    name = f"selection-{sha[:16]}-{protocol}-{data.resolve().name}{smoke}.json"
    return home / "bench-quality" / name


def selection(args: argparse.Namespace, sha: str, protocol: str) -> dict[str, Any]:
    path = _cache_path(sha, protocol, args.data)
    if args.reuse and path.exists():
        cached: dict[str, Any] = json.loads(path.read_text())
        if cached.get("protocol_sha256") != sha:
            raise SystemExit(f"{path}: cached selection of another protocol hash; delete it")
        cached["reused_from_cache"] = str(path)
        return cached
    print(f"[bench-quality] selection {protocol} (inner folds) ...", flush=True)
    sel = _subprocess(args, ["--worker-select", protocol])
    if "error" in sel:
        raise SystemExit(f"selection {protocol} failed; see the error above")
    sel["protocol_sha256"] = sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sel, indent=2))
    return sel


def plan(spec: dict[str, Any], sel: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Group name -> {"protocol", "kind", "rows": {row: seeds}} per PROTOCOL.md."""
    seeds = spec["evaluation_seeds"]
    groups: dict[str, dict[str, Any]] = {}
    for protocol in ("ms", "loo"):
        choice = sel[protocol]["choice"]
        rows = list(spec["rows"][protocol])
        if choice not in rows:
            rows.insert(0, choice)
        for row in rows:
            if row in spec["single_seed_rows"] or row == "popularity":
                s = seeds[:1]
            elif row in (choice, "ease"):
                s = seeds
            else:
                s = seeds[: spec["seeds_other"]]
            kind = "family" if row in FAMILY else row
            g = groups.setdefault(f"{protocol}:{kind}", {"protocol": protocol, "kind": kind})
            g.setdefault("rows", {})[row] = s
    return groups


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import resource as res

    from quality_lib import load_dataset, use_all_cores

    spec, sha = protocol_spec(), protocol_hash()
    if args.worker_select:
        from quality_select import select

        use_all_cores()
        out = select(args.worker_select, load_dataset(args.data), spec)
        out["peak_rss_mb"] = round(res.getrusage(res.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return out
    from quality_rows import run_group

    group = json.loads(args.worker_group)
    sel = json.loads(Path(args.selection).read_text())
    args.per_user_dir = str(args.out / "quality_per_user")
    return run_group(args, spec, sel, group, sha)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/movielens-100k"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--final", action="store_true", help="the quotable run: no reuse")
    parser.add_argument("--reuse", action="store_true", help="use the cached selection")
    parser.add_argument("--groups", default="", help="comma list of groups (not with --final)")
    parser.add_argument("--jobs", type=int, default=1, help="workers at once (default 1)")
    parser.add_argument("--smoke", action="store_true", help="tiny grid (code paths only)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild quality.{json,md} from an interrupted run's files (marked incomplete)",
    )
    parser.add_argument("--worker-select", help=argparse.SUPPRESS)
    parser.add_argument("--worker-group", help=argparse.SUPPRESS)
    parser.add_argument("--selection", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_select or args.worker_group:
        Path(args.result).write_text(json.dumps(worker(args), default=float))
        return 0
    if args.final and (args.reuse or args.groups or args.smoke):
        parser.error("--final is the run README quotes: it refuses --reuse, --groups, --smoke")
    if args.smoke:
        os.environ[SMOKE_ENV] = "1"

    from quality_report import analyse, markdown

    sha, spec = protocol_hash(), protocol_spec()
    if args.report_only:
        recover(args, sha, spec)
        return 0
    t0, load0 = time.perf_counter(), os.getloadavg()
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        sel = dict(
            zip(
                ("ms", "loo"),
                pool.map(lambda p: selection(args, sha, p), ("ms", "loo")),
                strict=True,
            )
        )
    groups = plan(spec, sel)
    wanted = [g for g in args.groups.split(",") if g] or [g for g in GROUP_ORDER if g in groups]
    results: dict[str, dict[str, Any]] = {}
    doc: dict[str, Any] = {}
    lock = threading.Lock()
    tmp = tempfile.TemporaryDirectory(prefix="bench-quality-sel-")
    for p in ("ms", "loo"):
        (Path(tmp.name) / f"{p}.json").write_text(json.dumps(sel[p]))

    def run(name: str) -> None:
        g = groups[name]
        path = Path(tmp.name) / f"{g['protocol']}.json"
        print(f"[bench-quality] {name} {g['rows']} ...", flush=True)
        r = _subprocess(args, ["--worker-group", json.dumps(g), "--selection", str(path)])
        r.setdefault("group", name)
        r.setdefault("rows", g["rows"])
        print(
            f"[bench-quality]   {name}: {r.get('run_seconds', r.get('wall_seconds'))} s",
            flush=True,
        )
        with lock:
            results[name] = r
            doc.clear()
            doc.update(
                command=" ".join([Path(sys.executable).name, *sys.argv]),
                final=bool(args.final),
                complete=False,
                date=date,
                protocol_sha256=sha,
                machine=machine(),
                data=str(args.data),
                jobs=args.jobs,
                selection=sel,
                groups=[results[n] for n in wanted if n in results],
                run={
                    "wall_seconds": round(time.perf_counter() - t0, 1),
                    "load_avg_start": [round(v, 2) for v in load0],
                    "load_avg_now": [round(v, 2) for v in os.getloadavg()],
                    "peak_rss_mb_workers": round(
                        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
                    ),
                },
            )
            write(args.out, doc, spec, sha, analyse, markdown)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(run, wanted))
    tmp.cleanup()
    doc["complete"] = len(results) == len(groups) and not any(
        "error" in r for r in results.values()
    )
    write(args.out, doc, spec, sha, analyse, markdown)
    print((args.out / "quality.md").read_text())
    return 0


def recover(args: argparse.Namespace, sha: str, spec: dict[str, Any]) -> None:
    """quality.{json,md} re-rendered from the selection caches and per-user files (no training).

    After an interrupted run: adds the seeds each unfinished group saved and marks the result
    incomplete and interrupted. After a complete run: the same numbers, the report re-rendered.
    """
    from quality_report import analyse, markdown

    from recflow.errors import DataError
    from recflow.evaluation.compare import load_user_scores

    path = args.out / "quality.json"
    old: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if old and old.get("protocol_sha256") != sha:
        old = {}
    sel = {}
    for p in ("ms", "loo"):
        cache = _cache_path(sha, p, args.data)
        if not cache.exists():
            raise SystemExit(f"{cache}: no selection of this protocol to report on")
        sel[p] = json.loads(cache.read_text())
    groups: list[dict[str, Any]] = list(old.get("groups", []))
    known = {f for g in groups for f in g.get("files", {}).values()}
    extra: dict[str, str] = {}
    rows: dict[str, list[int]] = {}
    for f in sorted((args.out / "quality_per_user").glob("*/*.npz")):
        if str(f) in known:
            continue
        try:
            s = load_user_scores(f, sha)
        except DataError as exc:
            print(f"[bench-quality] skipped {f}: {exc}", file=sys.stderr)
            continue
        extra[f"{s.model}/{s.protocol}"] = str(f)
        rows[f"{s.model} ({s.protocol})"] = list(s.seeds)
    if extra:
        groups.append({"group": "unfinished groups: seeds saved before the stop",
                       "rows": rows, "files": extra, "info": {}})  # fmt: skip
    finished = bool(old.get("complete")) and not extra
    doc = {
        **old,
        "command": old.get("command", " ".join([Path(sys.executable).name, *sys.argv])),
        "report_rebuilt_by": " ".join([Path(sys.executable).name, *sys.argv]),
        "final": old.get("final", False),
        "complete": finished,
        "interrupted": not finished,
        "date": old.get("date", dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
        "protocol_sha256": sha,
        "machine": old.get("machine", machine()),
        "data": str(args.data),
        "selection": sel,
        "groups": groups,
    }
    doc.setdefault("run", {})["load_avg_at_rebuild"] = [round(v, 2) for v in os.getloadavg()]
    write(args.out, doc, spec, sha, analyse, markdown)
    print((args.out / "quality.md").read_text())


def write(out: Path, doc: dict, spec: dict, sha: str, analyse: Any, markdown: Any) -> None:
    doc.update(analyse(doc, spec, sha))
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(doc, indent=2, default=float))
    (out / "quality.md").write_text(markdown(doc))


if __name__ == "__main__":
    sys.exit(main())
