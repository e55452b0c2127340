"""Selection run: every choice on inner folds of the training part (bench/PROTOCOL.md).

``select(protocol, ds, spec)`` returns the inner-fold scores of every grid point and candidate
and the choices: the blend family's part settings (stage 1) and weights (stage 2), SASRec's
epochs (LOO), and the headline model (best mean inner NDCG@10 among the candidates).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from quality_lib import (
    Fold,
    base_config,
    loo_fold,
    ms_inner_folds,
    point_name,
    popularity_table,
    weight_grid,
    zoo_inner_ndcg,
)


def _best(scores: dict[Any, float]) -> Any:
    return max(scores, key=lambda key: scores[key])


def _vae_variants(fold: Fold, spec: dict[str, Any], cfg: Any) -> dict[tuple, dict]:
    """(cap, members, epochs) -> weights of the first ``members`` networks, one training per cap."""
    from recflow.config import train_config
    from recflow.models.multvae.training import train_multvae

    out: dict[tuple, dict] = {}
    for cap in spec["vae_caps"]:
        c = train_config(
            cfg,
            multvae_beta_max=float(cap),
            multvae_members=max(spec["vae_members"]),
            multvae_epochs=max(spec["vae_epochs"]),
        )
        snaps: dict[int, dict[str, np.ndarray]] = {e: {} for e in spec["vae_epochs"]}
        train_multvae(fold.features, c, lambda line: None, snapshots=snaps)
        for epochs, weights in snaps.items():
            for m in spec["vae_members"]:
                first = {k: v[:m] for k, v in weights.items()}
                out[(float(cap), int(m), int(epochs))] = first
    return out


def select_family(folds: list[Fold], spec: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Stage 1: each part's setting alone; stage 2: weights on the simplex (parts fixed)."""
    from recflow.evaluation.loo import table_scorer
    from recflow.models.ease.closed_form import fit_ease, user_side_scores
    from recflow.models.multvae.export import score_numpy, standardise_rows
    from recflow.models.multvae.training import user_rows

    item: dict[float, list[float]] = {}
    user: dict[float, list[float]] = {}
    vae: dict[tuple, list[float]] = {}
    kept: list[dict[str, Any]] = []
    for fold in folds:
        f = fold.features
        x = user_rows(f)
        b = {lam: fit_ease(f, float(lam)) for lam in spec["item_lambdas"]}
        for lam, bb in b.items():
            item.setdefault(float(lam), []).append(fold.ndcg(table_scorer(f, x @ bb)))
        u = {lam: user_side_scores(f, float(lam)) for lam in spec["user_lambdas"]}
        for lam, table in u.items():
            user.setdefault(float(lam), []).append(fold.ndcg(table_scorer(f, table)))
        variants = _vae_variants(fold, spec, cfg)
        for key, members in variants.items():
            vae.setdefault(key, []).append(fold.ndcg(table_scorer(f, score_numpy(members, x))))
        kept.append({"x": x, "b": b, "u": u, "vae": variants})
    mean: dict[str, dict[Any, float]] = {
        name: {k: float(np.mean(v)) for k, v in d.items()}
        for name, d in (("item", item), ("user", user), ("vae", vae))
    }
    li, lu, kv = _best(mean["item"]), _best(mean["user"]), _best(mean["vae"])
    weights: dict[tuple[float, float, float], list[float]] = {}
    for fold, k in zip(folds, kept, strict=True):
        f = fold.features
        parts = (
            standardise_rows(k["x"] @ k["b"][_key(k["b"], li)]),
            standardise_rows(k["u"][_key(k["u"], lu)]),
            score_numpy(k["vae"][kv], k["x"]),
        )
        for w in weight_grid(spec["weight_step"]):
            blended = sum(wi * p for wi, p in zip(w, parts, strict=True) if wi)
            weights.setdefault(w, []).append(fold.ndcg(table_scorer(f, np.asarray(blended))))
    w_mean = {w: float(np.mean(v)) for w, v in weights.items()}
    best = _best(w_mean)
    multi = {w: s for w, s in w_mean.items() if point_name(w) == "blend"}
    best_multi = _best(multi)
    return {
        "stage1": {
            "item_lambda": {f"{k:g}": round(v, 5) for k, v in mean["item"].items()},
            "user_lambda": {f"{k:g}": round(v, 5) for k, v in mean["user"].items()},
            "vae": {
                f"cap {c:g} members {m} epochs {e}": round(v, 5)
                for (c, m, e), v in mean["vae"].items()
            },
        },
        "stage2_weights": {f"{w[0]:g}/{w[1]:g}/{w[2]:g}": round(v, 5) for w, v in w_mean.items()},
        "item_lambda": li,
        "user_lambda": lu,
        "vae": {"cap": kv[0], "members": kv[1], "epochs": kv[2]},
        "best_point": {"weights": list(best), "name": point_name(best), "ndcg": w_mean[best]},
        "best_blend": {"weights": list(best_multi), "ndcg": w_mean[best_multi]},
        "alone": {
            "ease": mean["item"][li],
            "user_ease": mean["user"][lu],
            "multvae": mean["vae"][kv],
        },
    }


def _key(d: dict[Any, Any], value: float) -> Any:
    return next(k for k in d if float(k) == value)


def select_sasrec_epochs(fold: Fold, spec: dict[str, Any], cfg: Any) -> dict[str, float]:
    """Validation NDCG@10 at each epoch of the grid, from one training to the largest."""
    from recflow.config import train_config
    from recflow.evaluation.loo import table_scorer
    from recflow.models.sasrec.network import score_sequences
    from recflow.models.sasrec.sequences import last_windows, user_sequences
    from recflow.models.sasrec.training import train_sasrec

    f = fold.features
    windows = last_windows(user_sequences(f, fold.split.train), cfg.sasrec.max_len)
    scores: dict[str, float] = {}

    def on_epoch(epoch: int, model: Any) -> dict[str, float]:
        if epoch not in spec["sasrec_epochs"]:
            return {}
        table = score_sequences(model, windows, "supervised")
        scores[str(epoch)] = fold.ndcg(table_scorer(f, table))
        return {"inner_ndcg": scores[str(epoch)]}

    # Every epoch of the grid is measured: early stopping would end the run before the largest.
    c = train_config(cfg, sasrec_epochs=max(spec["sasrec_epochs"]), sasrec_patience_steps=0)
    train_sasrec(f, fold.split, c, progress=lambda line: None, on_epoch=on_epoch)
    return scores


def select(protocol: str, ds: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Inner-fold choices for the MS (``"ms"``) or leave-one-out (``"loo"``) protocols."""
    from recflow.evaluation.loo import table_scorer

    t0 = time.perf_counter()
    seed = spec["selection_seed"]
    folds = ms_inner_folds(ds, spec) if protocol == "ms" else [loo_fold(ds)]
    seconds: dict[str, float] = {}
    family = select_family(folds, spec, base_config("blend", seed))
    seconds["blend-family"] = round(time.perf_counter() - t0, 1)
    candidates = {f"blend-family:{family['best_point']['name']}": family["best_point"]["ndcg"]}
    for row in ("neumf", "ranking_mlp"):
        t1 = time.perf_counter()
        candidates[row] = zoo_inner_ndcg(row, folds, base_config(row, seed))
        seconds[row] = round(time.perf_counter() - t1, 1)
    candidates["popularity"] = float(
        np.mean([f.ndcg(table_scorer(f.features, popularity_table(f.features))) for f in folds])
    )
    out: dict[str, Any] = {"protocol": protocol, "folds": len(folds), "family": family}
    if protocol == "loo":
        t1 = time.perf_counter()
        epochs = select_sasrec_epochs(folds[0], spec, base_config("sasrec", seed))
        seconds["sasrec"] = round(time.perf_counter() - t1, 1)
        out["sasrec_epochs_inner"] = epochs
        out["sasrec_epochs"] = int(_best(epochs))
        candidates["sasrec"] = max(epochs.values())
    best = _best(candidates)
    out["candidates_inner_ndcg"] = {k: round(v, 5) for k, v in candidates.items()}
    out["choice"] = best.split(":")[-1]
    out["seconds"] = seconds
    out["selection_seconds"] = round(time.perf_counter() - t0, 1)
    return out
