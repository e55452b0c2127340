"""Quality benchmark on MovieLens-100K: every zoo model under both evaluation protocols.

    python bench/quality.py --data ../shared/datasets/movielens-100k --out bench/results
    python bench/quality.py ... --models multvae --reuse   # re-run some, keep the other rows

Each (model, protocol) runs in its own subprocess (so peak memory is that run's own, and
TensorFlow state never leaks between models): fit through the zoo, export in the serving
contract, score through the exported SavedModel (what serving would answer), then metrics
with bootstrap 95 % intervals over users. The parent adds paired bootstrap intervals of the
best model against every other one (same users) and writes quality.json and quality.md.

Protocols (recflow.evaluation.protocols):
    leave-last-out   test stage (last event per user; validation event excluded), HR/NDCG/MRR@10
    ms-recommenders  MS Recommenders' movielens.ipynb split (stratified by item, 75/25,
                     seed 42) and their ranking metric definitions; nDCG@10, P@10, R@10, MAP

Hyperparameters are chosen on the training part only (never on test), in `_inner_folds`:
for MS, two 90/10 stratified splits of the MS training part; for leave-last-out, the
validation events. EASE's lambda comes from EASE_LAMBDAS, the blend's strengths and weights
from BLEND_GRID (each fold trains the Mult-VAE ensemble once), by mean inner NDCG@10.

Mult-VAE's defaults (config.TrainConfig) were chosen once, by hand, on the MS inner split
(the MS stratified split applied to the MS training part): nDCG@10 of the paper's settings
(200 epochs, beta cap 0.2 reached at epoch 100) was 0.240; the network overfits ML-100K's
943 users, and a stronger KL weight helped most (cap 1.0: 0.264; 0.5: 0.259; 2.0: 0.256;
cap 1.0 with input dropout 0.7: 0.261; 100 epochs at 0.2: 0.261; hidden 200 / latent 100:
0.254; 400 epochs: 0.213). EASE scores 0.266 on that split. Members side by side
(multvae_members; one-off runs on the MS split, 2026-11-28): one network 0.463, two 0.467,
four 0.470, five 0.472; four is the default because an even count splits the per-member
matrix products evenly over 2 cores (CPU/wall 1.63 vs 1.48 for three).

Threads: each worker gets OMP/OpenBLAS threads and TensorFlow's intra-op pool sized to the
machine's cores (os.cpu_count()), so CPU/wall can reach the core count; the 1-minute load
average before each worker is recorded, since other jobs on the machine lower CPU/wall.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

K = 10
PROTOCOLS = ("leave-last-out", "ms-recommenders")
EASE_LAMBDAS = (50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 800.0, 1200.0)
# Inner folds of the MS training part for hyperparameter choice (never the test split).
INNER_RATIO = 0.9
INNER_SEEDS = (1, 2)
BLEND_GRID: dict[str, tuple[float, ...]] = {
    "item_lambda": (300.0, 400.0, 500.0),
    "user_lambda": (400.0, 600.0, 800.0),
    "vae_weight": (0.3, 0.5, 0.6, 0.7, 0.8),
}
PUBLISHED: dict[str, dict[str, Any]] = {
    "ms-recommenders (ML-100K, nDCG@10)": {
        "BiVAE": 0.4751,
        "BPR": 0.4420,
        "LightGCN": 0.4198,
        "NCF": 0.3961,
        "SAR": 0.3825,
    },
    "leave-one-out full ranking (ML-1M, not run here)": {
        "SASRec/BERT4Rec NDCG@10": "about 0.15-0.16",
        "SASRec/BERT4Rec HR@10": "about 0.28",
    },
}
# Per-model training settings used by the benchmark (the zoo's config defaults otherwise).
MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    "neumf": {"epochs": 12, "embedding_dim": 32, "batch_size": 1024, "learning_rate": 0.002},
    "ranking_mlp": {"epochs": 10, "batch_size": 1024},
    # The DP-SGD variant of the ranking MLP (issue 6): its quality cost at a stated epsilon.
    "ranking_mlp+dp": {
        "epochs": 10,
        "batch_size": 1024,
        "dp_enabled": True,
        "dp_noise_multiplier": 1.1,
        "dp_l2_clip": 1.0,
    },
}
# Benchmark rows that are a zoo kind trained with other settings: "<kind>+<variant>".
VARIANTS: tuple[str, ...] = ("ranking_mlp+dp",)


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for pkg in ("numpy", "pandas", "scipy", "tensorflow", "keras"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
    }


# -- worker: one model under one protocol -----------------------------------------------------
def _load(data: Path) -> Any:
    from recflow.data import read_movielens_100k

    return read_movielens_100k(data)


def _ms_parts(ds: Any) -> tuple[Any, Any, Any]:
    """(features, split-like for fit, test frame) under the MS protocol."""
    from recflow.evaluation.protocols import ms_stratified_split
    from recflow.features import build_features
    from recflow.types import Split

    train, test = ms_stratified_split(ds.interactions)
    features = build_features(train, ds.items)
    return features, Split(train=train, validation=train.iloc[:0], test=test), test


def _inner_folds(ds: Any, protocol: str) -> list[tuple[Any, Callable[[np.ndarray], float]]]:
    """(features, table [U, N] -> inner NDCG@10) per inner fold of the TRAINING part only.

    MS protocol: two 90/10 splits of the MS training part, stratified by item as the outer
    split (seeds 1 and 2; 90 % keeps the inner training density close to the outer one).
    Leave-last-out: the validation events (each user's second-to-last).
    """
    from recflow.evaluation.protocols import evaluate_ms, ms_stratified_split
    from recflow.evaluation.slices import rank_users
    from recflow.features import build_features, split_leave_last_out

    folds: list[tuple[Any, Callable[[np.ndarray], float]]] = []

    def scorer(f: Any, table: np.ndarray) -> Any:
        def score(user_ids: np.ndarray) -> tuple[Any, Any]:
            return table[np.searchsorted(f.user_ids, user_ids)], f.item_ids

        return score

    if protocol == "ms-recommenders":
        train, _ = ms_stratified_split(ds.interactions)
        for seed in INNER_SEEDS:
            inner_train, inner_val = ms_stratified_split(train, ratio=INNER_RATIO, seed=seed)
            f = build_features(inner_train, ds.items)

            def ms_ndcg(table: np.ndarray, f: Any = f, val: Any = inner_val) -> float:
                return float(evaluate_ms(scorer(f, table), val, f, k=K)[0][f"ndcg@{K}"])

            folds.append((f, ms_ndcg))
    else:
        split = split_leave_last_out(ds.interactions)
        f = build_features(split.train, ds.items)

        def llo_ndcg(table: np.ndarray, f: Any = f) -> float:
            ranked = rank_users(scorer(f, table), split, f, k=K, stage="validation")
            return float(ranked.metrics(f.n_items)[f"ndcg@{K}"])

        folds.append((f, llo_ndcg))
    return folds


def _ease_lambda(ds: Any, protocol: str) -> tuple[float, dict[str, float]]:
    """Lambda with the best mean inner NDCG@10 (EASE fits in about a second)."""
    from recflow.models.ease import binary_matrix, fit_ease

    scores: dict[str, list[float]] = {f"{lam:g}": [] for lam in EASE_LAMBDAS}
    for f, ndcg in _inner_folds(ds, protocol):
        x = binary_matrix(f)
        for lam in EASE_LAMBDAS:
            scores[f"{lam:g}"].append(ndcg(np.asarray(x @ fit_ease(f, lam))))
    mean = {name: round(float(np.mean(v)), 5) for name, v in scores.items()}
    return float(max(mean, key=lambda name: mean[name])), mean


def _blend_settings(ds: Any, protocol: str, cfg: Any) -> tuple[dict[str, float], dict[str, float]]:
    """Blend strengths and weights with the best mean inner NDCG@10 over BLEND_GRID.

    Each fold trains the Mult-VAE ensemble once (the expensive part) and the EASE sides for
    every lambda; the weighted sums are cheap. The two EASE sides share the non-VAE weight.
    """
    from recflow.models.ease import binary_matrix, fit_ease, user_side_scores
    from recflow.models.multvae import score_numpy, standardise_rows, train_multvae, user_rows

    sums: dict[tuple[float, float, float], list[float]] = {}
    for f, ndcg in _inner_folds(ds, protocol):
        x = binary_matrix(f)
        items = {
            lam: standardise_rows(np.asarray(x @ fit_ease(f, lam)))
            for lam in BLEND_GRID["item_lambda"]
        }
        users = {
            lam: standardise_rows(user_side_scores(f, lam)) for lam in BLEND_GRID["user_lambda"]
        }
        vae_weights, _ = train_multvae(f, cfg, lambda line: None)
        vae = score_numpy(vae_weights, user_rows(f))
        for li, item in items.items():
            for lu, user in users.items():
                for w in BLEND_GRID["vae_weight"]:
                    table = (1 - w) / 2 * (item + user) + w * vae
                    sums.setdefault((li, lu, w), []).append(ndcg(table))
    mean = {key: float(np.mean(v)) for key, v in sums.items()}
    li, lu, w = max(mean, key=lambda key: mean[key])
    settings = {
        "blend_item_lambda": li,
        "blend_user_lambda": lu,
        "blend_item_weight": round((1 - w) / 2, 4),
        "blend_user_weight": round((1 - w) / 2, 4),
        "blend_vae_weight": w,
    }
    sweep = {f"item {k[0]:g} user {k[1]:g} vae {k[2]:g}": round(v, 5) for k, v in mean.items()}
    return settings, sweep


def _thread_env() -> dict[str, str]:
    """Environment of a worker: BLAS/OpenMP pools sized to every core, explicitly.

    OpenBLAS would pick the core count by itself, but an inherited OMP_NUM_THREADS=1 (common
    in CI and containers) would silently serialise EASE's inverse and TensorFlow's kernels.
    """
    n = str(os.cpu_count() or 1)
    return {
        **os.environ,
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }


def _use_all_cores() -> None:
    """TensorFlow's intra-op pool on every core, set before any op runs (it is fixed after)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)


def _intervals(per_user: dict[str, np.ndarray], samples: int) -> dict[str, Any]:
    from recflow.evaluation.bootstrap import bootstrap_mean

    return {
        name: bootstrap_mean(v, samples=samples, seed=0).to_dict() for name, v in per_user.items()
    }


def worker(args: argparse.Namespace) -> dict[str, Any]:
    from recflow.config import train_config
    from recflow.evaluation.protocols import evaluate_ms
    from recflow.evaluation.slices import rank_users, sliced_metrics
    from recflow.features import build_features, split_leave_last_out
    from recflow.models import load_scorer
    from recflow.models.zoo import get_kind
    from recflow.settings import flat_values

    _use_all_cores()
    ds = _load(Path(args.data))
    base_model = args.model.split("+")[0]
    kind = get_kind(base_model)
    cfg = train_config(model=base_model, **MODEL_OVERRIDES.get(args.model, {}))
    extra: dict[str, Any] = {}
    if args.model == "ease":
        lam, sweep = _ease_lambda(ds, args.protocol)
        cfg = train_config(cfg, ease_lambda=lam)
        extra["ease_lambda_sweep_inner_validation_ndcg"] = sweep
    if args.model == "blend":
        t0 = time.perf_counter()
        settings, sweep = _blend_settings(ds, args.protocol, cfg)
        cfg = train_config(cfg, **settings)
        extra["blend_sweep_inner_validation_ndcg"] = sweep
        extra["blend_selection_seconds"] = round(time.perf_counter() - t0, 1)
    if args.protocol == "ms-recommenders":
        features, split, test = _ms_parts(ds)
    else:
        split = split_leave_last_out(ds.interactions)
        features = build_features(split.train, ds.items)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        fitted = kind.fit(features, split, cfg, lambda line: None, Path(tmp) / "train")
        epsilons = fitted.get("history", {}).get("dp_epsilon")
        if epsilons:
            extra["dp_epsilon"] = float(epsilons[-1])
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        t0 = time.perf_counter()
        saved = kind.export(Path(tmp) / "train", features, Path(tmp) / "model", 20, [])
        export_seconds = time.perf_counter() - t0
        scorer = load_scorer(saved)
        t0 = time.perf_counter()
        if args.protocol == "ms-recommenders":
            metrics, per_user = evaluate_ms(scorer, test, features, k=K)
            slices = None
        else:
            ranked = rank_users(scorer, split, features, k=K, stage="test")
            metrics = ranked.metrics(features.n_items)
            hit = (ranked.topk[:, :K] == ranked.targets[:, None]).any(axis=1)
            rank = (ranked.topk[:, :K] == ranked.targets[:, None]).argmax(axis=1) + 1
            per_user = {
                f"hr@{K}": hit.astype(np.float64),
                f"ndcg@{K}": ranked.per_user_ndcg(),
                f"mrr@{K}": np.where(hit, 1.0 / rank, 0.0),
            }
            slices = {
                name: {m: round(v, 4) for m, v in s.items()}
                for name, s in sliced_metrics(ranked, features).items()
            }
        eval_seconds = time.perf_counter() - t0
    arrays: dict[str, Any] = dict(per_user)  # numpy's stubs mistype **kwargs of savez
    np.savez(args.per_user, **arrays)
    return {
        "model": args.model,
        "protocol": args.protocol,
        "config": {
            k: v
            for k, v in {**flat_values(cfg), "distribution": cfg.distribution}.items()
            if not k.startswith("sqn")
        },
        "metrics": metrics,
        "intervals_95": _intervals(per_user, args.bootstrap),
        "slices": slices,
        "train_seconds": round(wall, 2),
        "train_cpu_seconds": round(cpu, 2),
        "cpu_per_wall": round(cpu / wall, 2) if wall > 0 else None,
        "export_seconds": round(export_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        # ru_maxrss is KiB on Linux; includes the TensorFlow import of this process.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **extra,
    }


# -- parent -----------------------------------------------------------------------------------
def run_one(args: argparse.Namespace, model: str, protocol: str, out: Path) -> dict[str, Any]:
    per_user = out / "quality_per_user" / f"{model}__{protocol}.npz"
    per_user.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        result_path = Path(tmp.name)
    cmd = [
        sys.executable, __file__, "--worker", "--model", model, "--protocol", protocol,
        "--data", str(args.data), "--bootstrap", str(args.bootstrap),
        "--per-user", str(per_user), "--result", str(result_path),
    ]  # fmt: skip
    load_before = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_thread_env())
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return {"model": model, "protocol": protocol, "error": done.stderr[-1500:]}
    result = json.loads(result_path.read_text())
    result_path.unlink()
    result["run_seconds"] = round(time.perf_counter() - t0, 1)
    result["per_user_file"] = str(per_user)
    result["load_1m_before"] = load_before
    result["threads"] = os.cpu_count()
    return result


def paired(results: list[dict[str, Any]], protocol: str, samples: int) -> dict[str, Any]:
    """Paired bootstrap of the best model's per-user NDCG@10 against every other model."""
    from recflow.evaluation.bootstrap import paired_bootstrap

    ok = [r for r in results if r["protocol"] == protocol and "error" not in r]
    if len(ok) < 2:
        return {}
    metric = f"ndcg@{K}"
    best = max(ok, key=lambda r: r["metrics"][metric])
    with np.load(best["per_user_file"]) as npz:
        a = npz[metric]
    out: dict[str, Any] = {"best": best["model"], "metric": metric, "against": {}}
    for r in ok:
        if r is best:
            continue
        with np.load(r["per_user_file"]) as npz:
            b = npz[metric]
        ci = paired_bootstrap(a, b, samples=samples, seed=0)
        out["against"][r["model"]] = {**ci.to_dict(), "excludes_zero": ci.low > 0 or ci.high < 0}
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Quality benchmark: MovieLens-100K",
        "",
        f"Command: `{doc['command']}`  ",
        f"Date: {doc['date']}  ",
        f"Machine: {doc['machine']['platform']}, {doc['machine']['cpu_count']} CPUs, "
        f"threads per worker {doc['machine']['cpu_count']}, Python {doc['machine']['python']}, TF "
        f"{doc['machine']['tensorflow']}",
        "",
        "Intervals are percentile bootstrap 95 % over users (1000 resamples unless stated).",
        "Train time is the zoo `fit` only (export and evaluation listed separately); CPU/wall "
        "is process CPU time over wall time during fit (2 = both cores busy). Peak RSS is the "
        "worker process's maximum resident memory, TensorFlow import included. Load is the "
        "machine's 1-minute load average just before the model's run (above the core count, "
        "other jobs competed for the CPUs and CPU/wall understates the model's parallelism).",
        "Rows marked reused come from an earlier run (`--reuse`; command and date in "
        "quality.json, `produced_by`).",
        "",
    ]
    cols = {
        "leave-last-out": [f"hr@{K}", f"ndcg@{K}", f"mrr@{K}", f"coverage@{K}"],
        "ms-recommenders": [f"ndcg@{K}", f"precision@{K}", f"recall@{K}", "map", f"map@{K}"],
    }
    for protocol in PROTOCOLS:
        rows = [r for r in doc["results"] if r["protocol"] == protocol]
        if not rows:
            continue
        lines += [f"## {protocol}", ""]
        head = ["model", *cols[protocol], "train s", "CPU/wall", "load", "peak MB"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['model']} | failed: see quality.json |")
                continue
            cells = [r["model"]]
            for m in cols[protocol]:
                v = r["metrics"].get(m)
                ci = r["intervals_95"].get(m)
                cells.append(f"{v:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]" if ci else f"{v:.4f}")
            if r.get("produced_by", {}).get("date", doc["date"]) != doc["date"]:
                cells[0] += f" (reused: {r['produced_by']['date']})"
            cells += [
                f"{r['train_seconds']:.1f}",
                f"{r['cpu_per_wall']}",
                f"{r.get('load_1m_before', '')}",
                f"{r['peak_rss_mb']}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        pair = doc["paired"].get(protocol)
        if pair:
            lines += ["", f"Paired bootstrap, {pair['best']} - other, {pair['metric']}:", ""]
            for other, ci in pair["against"].items():
                mark = "excludes 0" if ci["excludes_zero"] else "includes 0"
                lines.append(
                    f"- vs {other}: {ci['mean']:+.4f} [{ci['low']:+.4f}, {ci['high']:+.4f}] "
                    f"({mark})"
                )
        lines.append("")
    dp_rows = [r for r in doc["results"] if r.get("dp_epsilon") is not None]
    if dp_rows:
        lines += ["## Differential privacy", ""]
        lines += [
            f"- {r['model']} / {r['protocol']}: DP-SGD with noise multiplier "
            f"{r['config']['dp_noise_multiplier']}, clip {r['config']['dp_l2_clip']}, "
            f"epsilon {r['dp_epsilon']:.3f} (delta 1/training rows, per training row)"
            for r in dp_rows
        ]
        lines += [""]
    lines += ["## Published references (not run here)", ""]
    for name, table in PUBLISHED.items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in table.items()))
    lines += ["", "## Targets", ""]
    for t in doc["targets"]:
        lines.append(f"- {t}")
    if doc.get("missing_models"):
        lines += ["", f"Not benchmarked (not in the zoo at run time): {doc['missing_models']}"]
    return "\n".join(lines) + "\n"


def targets(doc: dict[str, Any]) -> list[str]:
    out = []
    ms = [r for r in doc["results"] if r["protocol"] == "ms-recommenders" and "error" not in r]
    if ms:
        best = max(ms, key=lambda r: r["metrics"][f"ndcg@{K}"])
        v = best["metrics"][f"ndcg@{K}"]
        out.append(
            f"MS protocol best nDCG@10 >= 0.49: {best['model']} {v:.4f} -> "
            f"{'MET' if v >= 0.49 else 'MISSED'}"
        )
        fast = best["train_seconds"] < 600 and (best["cpu_per_wall"] or 0) >= 1.6
        out.append(
            f"best model trains in < 10 min with CPU/wall >= 1.6: {best['train_seconds']} s, "
            f"CPU/wall {best['cpu_per_wall']} -> {'MET' if fast else 'MISSED'}"
        )
    pair = doc["paired"].get("leave-last-out")
    if pair:
        seq = [m for m in ("sasrec", "sasrec_sqn") if m == pair["best"]]
        if seq:
            beats = all(ci["low"] > 0 for ci in pair["against"].values())
            out.append(
                f"leave-last-out: Transformer ({pair['best']}) beats every other model with a "
                f"paired CI excluding zero -> {'MET' if beats else 'MISSED'}"
            )
        else:
            out.append(
                f"leave-last-out: best model is {pair['best']}, not the Transformer -> MISSED"
            )
    return out


def reused_rows(previous: Path, fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of ``previous`` for (model, protocol) pairs not in ``fresh``, each marked with the
    command and date of the run that produced it (so a mixed table says what came from where).
    """
    if not previous.exists():
        return []
    old = json.loads(previous.read_text())
    done = {(r["model"], r["protocol"]) for r in fresh}
    kept = []
    for r in old.get("results", []):
        if (r["model"], r["protocol"]) in done or "error" in r:
            continue
        r.setdefault("produced_by", {"command": old["command"], "date": old["date"]})
        if Path(r.get("per_user_file", "")).exists():
            kept.append(r)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/movielens-100k"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--models", default="", help="comma list; default every zoo kind")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the previous quality.json rows of (model, protocol) pairs not re-run now",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--protocol", help=argparse.SUPPRESS)
    parser.add_argument("--per-user", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args), default=float))
        return 0

    from recflow.models.zoo import kind_names

    available = [*kind_names(), *VARIANTS]
    wanted = [m for m in args.models.split(",") if m] or available
    missing = [m for m in ("sasrec", "sasrec_sqn") if m not in available]
    models = [m for m in wanted if m in available]
    command = " ".join([Path(sys.executable).name, *sys.argv])
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    protocols = [p for p in args.protocols.split(",") if p]
    results = []
    for protocol in protocols:
        for model in models:
            print(f"[bench-quality] {model} / {protocol} ...", flush=True)
            r = run_one(args, model, protocol, args.out)
            r["produced_by"] = {"command": command, "date": date}
            results.append(r)
            if "error" not in r:
                print(
                    f"[bench-quality]   ndcg@{K} {r['metrics'][f'ndcg@{K}']:.4f} "
                    f"train {r['train_seconds']} s cpu/wall {r['cpu_per_wall']}",
                    flush=True,
                )
    if args.reuse:
        results = reused_rows(args.out / "quality.json", results) + results
        order = {m: i for i, m in enumerate(available)}
        results.sort(key=lambda r: (PROTOCOLS.index(r["protocol"]), order.get(r["model"], 99)))
    doc: dict[str, Any] = {
        "command": command,
        "date": date,
        "machine": machine(),
        "data": str(args.data),
        "k": K,
        "results": results,
        "paired": {p: paired(results, p, args.bootstrap) for p in PROTOCOLS},
        "published": PUBLISHED,
        "missing_models": missing,
    }
    doc["targets"] = targets(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(doc, indent=2, default=float))
    (args.out / "quality.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
