"""Evaluation run: train the chosen settings with the protocol's seeds, score the test split once.

One group of rows per worker process (``run_group``): the blend family (EASE, user-side EASE,
Mult-VAE, blend and popularity from the same trainings), SASRec, SASRec+SQN, or a zoo kind
scored through its exported SavedModel (NeuMF, ranking MLP, DP ranking MLP). LOO groups score
both leave-one-out variants from the same trainings where the row takes the extra item.
Per-user arrays are saved with their user ids and the protocol hash.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from quality_lib import (
    FAMILY_ROWS,
    Fold,
    K,
    base_config,
    loo_fold,
    ms_fold,
    popularity_table,
    vae_config,
    zoo_scorer,
)


def outer_fold(protocol: str, ds: Any) -> Fold:
    from recflow.evaluation.protocols import ms_stratified_split

    if protocol == "ms":
        train, test = ms_stratified_split(ds.interactions)
        return ms_fold(train, test, ds.items)
    return loo_fold(ds)


class Collector:
    """Per (row, variant): user ids and per-seed per-user metrics, then saved as UserScores."""

    def __init__(self, protocol_sha256: str, out: Path) -> None:
        self.sha, self.out = protocol_sha256, out
        self.data: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, row: str, variant: str, seed: int, ids: np.ndarray, per_user: dict) -> None:
        d = self.data.setdefault((row, variant), {"ids": ids, "seeds": [], "values": {}})
        if not np.array_equal(d["ids"], ids):
            raise RuntimeError(f"{row}/{variant}: user ids differ between seeds")
        d["seeds"].append(seed)
        for m, v in per_user.items():
            d["values"].setdefault(m, []).append(np.asarray(v, np.float64))

    def save(self) -> dict[str, str]:
        from recflow.evaluation.compare import UserScores

        files = {}
        for (row, variant), d in self.data.items():
            scores = UserScores(
                model=row,
                protocol=variant,
                protocol_sha256=self.sha,
                user_ids=np.asarray(d["ids"]).astype(str),
                seeds=tuple(d["seeds"]),
                values={m: np.stack(v) for m, v in d["values"].items()},
            )
            path = self.out / variant / f"{row}.npz"
            scores.save(path)
            files[f"{row}/{variant}"] = str(path)
        return files


def _ms_score(fold: Fold, score_fn: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from recflow.evaluation.protocols import evaluate_ms, relevant_sets

    _, per_user = evaluate_ms(score_fn, fold.split.test, fold.features, k=K)
    users = relevant_sets(fold.split.test, fold.features).users
    return fold.features.user_ids[users].astype(str), per_user


def _score(protocol: str, fold: Fold, score_fn: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from recflow.evaluation.loo import ours_test

    if protocol == "ms":
        return _ms_score(fold, score_fn)
    return ours_test(score_fn, fold.split, fold.features, K)


def family_group(
    protocol: str, fold: Fold, sel: dict, rows: dict[str, list[int]], col: Collector
) -> dict[str, Any]:
    """EASE / user-side EASE / Mult-VAE / blend / popularity rows from shared trainings."""
    from recflow.evaluation.loo import peers_test, table_scorer, with_validation_item
    from recflow.models.blend.export import score_numpy as blend_scores
    from recflow.models.ease.closed_form import fit_ease, user_side_scores
    from recflow.models.multvae.training import train_multvae, user_rows

    fam = sel["family"]
    f, variant = fold.features, ("ms" if protocol == "ms" else "loo")
    x = user_rows(f)
    x_peers = with_validation_item(x, fold.split, f) if protocol == "loo" else None
    rows_idx = np.arange(f.n_users)
    weights = {
        "ease": (1.0, 0.0, 0.0),
        "user_ease": (0.0, 1.0, 0.0),
        "multvae": (0.0, 0.0, 1.0),
        "blend": tuple(fam["best_blend"]["weights"]),
    }
    timing: dict[str, list[float]] = {}
    user = (
        user_side_scores(f, float(fam["user_lambda"]))
        if "user_ease" in rows or "blend" in rows
        else None
    )
    vae_seeds = max([len(rows.get(r, [])) for r in ("multvae", "blend")] + [0])
    all_seeds = sorted({s for r in rows.values() for s in r})
    for seed in all_seeds:
        t0 = time.perf_counter()
        arrays: dict[str, np.ndarray] = {"ease_b": fit_ease(f, float(fam["item_lambda"]))}
        if user is not None:
            arrays["user_scores"] = user
        if seed in all_seeds[:vae_seeds]:
            cfg = vae_config(base_config("multvae", seed), fam["vae"])
            w, _ = train_multvae(f, cfg, lambda line: None)
            arrays.update({"vae_" + k: v for k, v in w.items()})
        timing.setdefault("train_seconds", []).append(round(time.perf_counter() - t0, 2))
        for row, seeds in rows.items():
            if seed not in seeds or row == "popularity":
                continue
            table = blend_scores(arrays, weights[row], rows_idx, x)
            ids, per_user = _score(protocol, fold, table_scorer(f, table))
            col.add(row, variant, seed, ids, per_user)
            if x_peers is not None:
                peers = blend_scores(arrays, weights[row], rows_idx, x_peers)
                ids, per_user = peers_test(peers, fold.split, f, K, mask_history=True)
                col.add(row, "peers", seed, ids, per_user)
        col.save()  # after every seed, so an interrupted run keeps the seeds it finished
    if "popularity" in rows:
        table = popularity_table(f)
        ids, per_user = _score(protocol, fold, table_scorer(f, table))
        col.add("popularity", variant, rows["popularity"][0], ids, per_user)
        if protocol == "loo":
            ids, per_user = peers_test(table, fold.split, f, K, mask_history=True)
            col.add("popularity", "peers", rows["popularity"][0], ids, per_user)
    return {"seconds_per_seed": timing.get("train_seconds", []), "vae_seeds": vae_seeds}


def sequential_group(
    row: str, fold: Fold, sel: dict, seeds: list[int], col: Collector
) -> dict[str, Any]:
    """SASRec (or SASRec+SQN) per seed; ours and the peers' variant (no history mask)."""
    from recflow.evaluation.loo import ours_test, peers_test, table_scorer
    from recflow.models.sasrec.network import score_sequences
    from recflow.models.sasrec.sequences import last_windows, user_sequences
    from recflow.models.sasrec.training import train_sasrec

    f, split = fold.features, fold.split
    info: dict[str, list[Any]] = {
        "train_seconds": [], "cpu_per_wall": [], "epochs_trained": [], "best_epoch": []
    }  # fmt: skip
    for seed in seeds:
        cfg = base_config(row, seed, sasrec_epochs=int(sel["sasrec_epochs"]))
        head = cfg.sqn.serve_head if row == "sasrec_sqn" else "supervised"
        trained = train_sasrec(f, split, cfg, q_head=row == "sasrec_sqn", progress=lambda s: None)
        info["train_seconds"].append(round(trained.seconds, 2))
        info["cpu_per_wall"].append(round(trained.cpu_seconds / trained.seconds, 2))
        # Early stopping makes the epoch count a per-seed outcome, not the recipe's constant.
        info["epochs_trained"].append(trained.epochs_trained)
        info["best_epoch"].append(trained.best_epoch)
        ours = score_sequences(
            trained.model, last_windows(trained.sequences, cfg.sasrec.max_len), head
        )
        ids, per_user = ours_test(table_scorer(f, ours), split, f, K)
        col.add(row, "loo", seed, ids, per_user)
        import pandas as pd

        with_val = pd.concat([split.train, split.validation], ignore_index=True)
        seqs = user_sequences(f, with_val)
        peers = score_sequences(trained.model, last_windows(seqs, cfg.sasrec.max_len), head)
        ids, per_user = peers_test(peers, split, f, K, mask_history=False)
        col.add(row, "peers", seed, ids, per_user)
        col.save()
    return info


def zoo_group(
    protocol: str, row: str, fold: Fold, seeds: list[int], col: Collector
) -> dict[str, Any]:
    info: dict[str, list[Any]] = {"train_seconds": [], "cpu_per_wall": []}
    variant = "ms" if protocol == "ms" else "loo"
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
            scorer, fit = zoo_scorer(row, fold, base_config(row, seed), Path(tmp))
            ids, per_user = _score(protocol, fold, scorer)
        col.add(row, variant, seed, ids, per_user)
        info["train_seconds"].append(fit["train_seconds"])
        info["cpu_per_wall"].append(fit["cpu_per_wall"])
        if "dp_epsilon" in fit:
            info.setdefault("dp_epsilon", []).append(fit["dp_epsilon"])
        col.save()
    return info


def row_config(row: str, sel: dict) -> dict[str, Any]:
    """The settings a row is trained with (for the results file)."""
    fam = sel["family"]
    from recflow.config import train_config
    from recflow.settings import flat_values

    cfg = base_config(row, 0)
    if row in FAMILY_ROWS:
        w = {"ease": [1, 0, 0], "user_ease": [0, 1, 0], "multvae": [0, 0, 1]}.get(
            row, fam["best_blend"]["weights"]
        )
        cfg = train_config(
            vae_config(cfg, fam["vae"]),
            blend_item_lambda=float(fam["item_lambda"]),
            blend_user_lambda=float(fam["user_lambda"]),
            blend_item_weight=float(w[0]),
            blend_user_weight=float(w[1]),
            blend_vae_weight=float(w[2]),
        )
    if row in ("sasrec", "sasrec_sqn"):
        cfg = train_config(cfg, sasrec_epochs=int(sel["sasrec_epochs"]))
    out = {k: v for k, v in flat_values(cfg).items() if k != "seed"}
    if row == "popularity":
        return {"model": "popularity"}
    return out


def run_group(args: Any, spec: dict, sel: dict, group: dict, sha: str) -> dict[str, Any]:
    """One worker: a group {"protocol", "kind", "rows": {row: seeds}}."""
    import os
    import resource

    from quality_lib import load_dataset, use_all_cores

    use_all_cores()
    t0 = time.perf_counter()
    ds = load_dataset(Path(args.data))
    fold = outer_fold(group["protocol"], ds)
    col = Collector(sha, Path(args.per_user_dir))
    rows: dict[str, list[int]] = group["rows"]
    kind = group["kind"]
    if kind == "family":
        info = family_group(group["protocol"], fold, sel, rows, col)
    elif kind in ("sasrec", "sasrec_sqn"):
        info = sequential_group(kind, fold, sel, rows[kind], col)
    else:
        info = zoo_group(group["protocol"], kind, fold, rows[kind], col)
    info["config"] = {row: row_config(row, sel) for row in rows}  # what each row trained with
    files = col.save()
    return {
        "group": f"{group['protocol']}:{kind}",
        "rows": rows,
        "files": files,
        "info": info,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_1m_end": round(os.getloadavg()[0], 2),
    }
