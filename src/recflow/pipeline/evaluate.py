"""Stage 6: full-ranking metrics for the candidate, the popularity baseline and the champion.

The champion is re-scored on this run's split (its recorded numbers came from other data),
through the same serving-contract scorer as the candidate. Besides the metrics, evaluate
writes the candidate's validation metrics per slice (``slices``) and the per-user validation
NDCG@k of candidate, popularity and champion (same users, same order) to
``per_user_ndcg.npz`` under the run folder, for the gate's paired bootstrap.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from recflow.config import PipelineConfig
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import CHAMPION, EVALUATION_JSON
from recflow.registry import Registry

STAGES = ("validation", "test")
PER_USER_FILE = "per_user_ndcg.npz"


class _Scored:
    """Metrics per stage plus the validation ranking, kept for per-user values and slices."""

    def __init__(
        self, scorer: Any, split: Any, features: Any, cfg: PipelineConfig, who: str
    ) -> None:
        from recflow.evaluation.slices import rank_users
        from recflow.progress import Progress

        ranked = {}
        for s in STAGES:
            meter: Progress | None = None

            def tick(done: int, total: int, s: str = s) -> None:
                nonlocal meter
                if meter is None:
                    meter = Progress(
                        f"evaluate {who} ({s})",
                        total,
                        say,
                        unit="users",
                        interval=cfg.train.progress_seconds,
                    )
                meter.update(done)

            ranked[s] = rank_users(
                scorer,
                split,
                features,
                k=cfg.eval_k,
                stage=s,
                user_sample=cfg.eval_user_sample,
                progress=tick,
            )
            if meter is not None:
                meter.finish()
        self.metrics = {s: r.metrics(features.n_items) for s, r in ranked.items()}
        self.validation = ranked["validation"]


def _score_all(
    scorer: Any, split: Any, features: Any, cfg: PipelineConfig, who: str = "candidate"
) -> _Scored:
    """``who`` names the scorer in progress lines. A user sample (``eval_user_sample``) is
    the same for every scorer on the same split (fixed seed)."""
    return _Scored(scorer, split, features, cfg, who)


def _restricted(scorer: Any, keep: set[str]) -> Any:
    """``scorer`` ranking only the items in ``keep`` (the others are left out of its catalogue)."""

    def score(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, catalogue = scorer(user_ids)
        ids = np.asarray(catalogue).reshape(-1)
        mask = np.array([(i.decode() if isinstance(i, bytes) else str(i)) in keep for i in ids])
        return np.asarray(scores)[:, mask], ids[mask]

    return score


def _held_out_in(split: Any, keep: set[str]) -> Any:
    """The split with only the held-out rows whose item is in ``keep`` (training unchanged)."""
    import dataclasses

    from recflow.schema import ITEM_ID

    def only(frame: Any) -> Any:
        return frame[frame[ITEM_ID].astype(str).isin(keep)]

    return dataclasses.replace(split, validation=only(split.validation), test=only(split.test))


def _compare_with_champion(
    cfg: PipelineConfig,
    registry: Registry,
    champion: Any,
    candidate: tuple[Any, _Scored],
    split: Any,
    features: Any,
    source: str,
) -> dict[str, Any]:
    """Score the champion on the items both models know; the catalogue facts for the gate.

    With the same catalogue this is the champion scored on the whole split. When the champion
    knows other items, both models rank only the shared items, for the users whose held-out
    item is shared (``candidate_on_shared``/``champion`` then hold those users' metrics).
    """
    from recflow import catalogue as cat
    from recflow.errors import DataError
    from recflow.models import load_scorer

    scorer, scored = candidate
    run_tags: dict[str, str] = {}
    if champion.run_id and not champion.tags.get(cat.TAG_SOURCE):
        run_tags = dict(registry.get_run(champion.run_id).tags)
    out: dict[str, Any] = {"version": champion.version}
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        path = registry.download_version(cfg.registry.model_name, champion.version, Path(tmp))
        champ_scorer = load_scorer(path)
        champ_cat = cat.of_scorer(champ_scorer, cat.recorded_source(champion.tags, run_tags))
        cand_cat = cat.of_scorer(scorer, source)
        overlap = cat.overlap(cand_cat, champ_cat)
        out["catalogue"] = {"champion": champ_cat.summary(), "overlap": overlap.to_dict()}
        keep = set(overlap.shared_ids)
        if keep >= {str(i) for i in features.item_ids}:
            out["scored"], out["candidate"] = (
                _score_all(champ_scorer, split, features, cfg, "champion"),
                scored,
            )
            return out
        sub = _held_out_in(split, keep)
        try:
            out["scored"] = _score_all(
                _restricted(champ_scorer, keep), sub, features, cfg, "champion"
            )
            out["candidate"] = _score_all(_restricted(scorer, keep), sub, features, cfg)
        except DataError as error:  # no evaluated user's held-out item is a shared item
            out["scored"] = out["candidate"] = None
            out["catalogue"]["no_comparison"] = str(error)
        out["restricted"] = True
    return out


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.evaluation import popularity_scorer
    from recflow.features import load_features, load_split
    from recflow.models import load_scorer

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    features = load_features(ctx.features_dir)
    split = load_split(ctx.split_dir)
    k = cfg.eval_k

    from recflow.catalogue import of_scorer
    from recflow.evaluation.slices import sliced_metrics
    from recflow.storage import atomic_directory

    result: dict[str, Any] = {"k": k}
    source = _data_source(ctx)
    candidate_scorer = load_scorer(ctx.saved_model_dir)
    candidate = _score_all(candidate_scorer, split, features, cfg)
    result["catalogue"] = {"candidate": of_scorer(candidate_scorer, source).summary()}
    popularity = _score_all(popularity_scorer(features), split, features, cfg, "popularity")
    result["candidate"] = candidate.metrics
    result["popularity"] = popularity.metrics
    result["champion"] = None
    per_user = {
        "user_ids": features.user_ids[candidate.validation.users].astype(str),
        "candidate": candidate.validation.per_user_ndcg(),
        "popularity": popularity.validation.per_user_ndcg(),
    }
    champion = registry.get_version_by_alias(cfg.registry.model_name, CHAMPION)
    if champion is not None:
        compared = _compare_with_champion(
            cfg, registry, champion, (candidate_scorer, candidate), split, features, source
        )
        result["champion_version"] = champion.version
        result["catalogue"].update(compared["catalogue"])
        scored = compared["scored"]
        if scored is not None:
            result["champion"] = scored.metrics
            per_user["champion"] = scored.validation.per_user_ndcg()
        if compared.get("restricted") and compared["candidate"] is not None:
            # The champion rule compares these: both models on the items both know.
            result["candidate_on_shared"] = compared["candidate"].metrics
            per_user["candidate_on_shared"] = compared["candidate"].validation.per_user_ndcg()
    result["slices"] = {"candidate": sliced_metrics(candidate.validation, features)}
    # np.savez appends ".npz" to names without it; write into a scratch folder, then move.
    with atomic_directory(ctx.run_dir / "per_user") as scratch:
        np.savez(scratch / PER_USER_FILE, **per_user)
    result["per_user_file"] = str(ctx.run_dir / "per_user" / PER_USER_FILE)

    for who in ("candidate", "popularity", "champion", "candidate_on_shared"):
        if result.get(who) is None:
            continue
        for stage, metrics in result[who].items():
            registry.log_metrics(
                mlflow_run, {f"{who}.{stage}.{name}": float(v) for name, v in metrics.items()}
            )
    registry.log_dict(mlflow_run, result, "evaluation/metrics.json")
    ctx.write_json(EVALUATION_JSON, result)
    m = f"ndcg@{k}"
    line = (
        f"evaluate (validation {m}): candidate {result['candidate']['validation'][m]:.4f}, "
        f"popularity {result['popularity']['validation'][m]:.4f}"
    )
    if result["champion"] is not None:
        line += (
            f", champion v{result['champion_version']} {result['champion']['validation'][m]:.4f}"
        )
    say(line)
    overlap = result["catalogue"].get("overlap")
    if overlap and (overlap["share_of_champion"] < 1.0 or "candidate_on_shared" in result):
        say(
            f"evaluate: catalogues differ: the candidate knows {overlap['candidate_size']} items, "
            f"the champion {overlap['champion_size']}, shared {overlap['shared']} "
            f"({overlap['share_of_champion']:.1%} of the champion's); the champion comparison "
            "ranks only the shared items"
        )
    return result


def _data_source(ctx: RunContext) -> str:
    from recflow.catalogue import UNKNOWN_SOURCE

    path = ctx.run_dir / "ingest.json"
    if not path.is_file():
        return UNKNOWN_SOURCE
    return str(ctx.read_json("ingest.json").get("source") or UNKNOWN_SOURCE)
