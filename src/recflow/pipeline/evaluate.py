"""Stage 6: full-ranking metrics for the candidate, the popularity baseline and the champion.

The champion is re-scored on this run's split (its recorded numbers came from other data),
through the same serving-contract scorer as the candidate. Besides the metrics, evaluate
writes the candidate's validation metrics per slice (``slices``) and the per-user validation
NDCG@k of candidate, popularity and champion (same users, same order) to
``per_user_ndcg.npz`` under the run folder, for the gate's paired bootstrap.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow.config import PipelineConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import CHAMPION, EVALUATION_JSON
from recflow.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

    from recflow.catalogue import Overlap
    from recflow.registry import ModelVersionInfo
    from recflow.types import Features, ScoreFn, Split

STAGES = ("validation", "test")
PER_USER_FILE = "per_user_ndcg.npz"


class _Scored:
    """Metrics per stage plus the validation ranking, kept for per-user values and slices."""

    def __init__(
        self, scorer: ScoreFn, split: Split, features: Features, cfg: PipelineConfig, who: str
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
    scorer: ScoreFn, split: Split, features: Features, cfg: PipelineConfig, who: str = "candidate"
) -> _Scored:
    """``who`` names the scorer in progress lines. A user sample (``eval_user_sample``) is
    the same for every scorer on the same split (fixed seed)."""
    return _Scored(scorer, split, features, cfg, who)


def _restricted(scorer: ScoreFn, keep: set[str]) -> ScoreFn:
    """``scorer`` ranking only the items in ``keep`` (the others are left out of its catalogue)."""

    def score(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, catalogue = scorer(user_ids)
        ids = np.asarray(catalogue).reshape(-1)
        mask = np.array([(i.decode() if isinstance(i, bytes) else str(i)) in keep for i in ids])
        return np.asarray(scores)[:, mask], ids[mask]

    return score


def _held_out_in(split: Split, keep: set[str]) -> Split:
    """The split with only the held-out rows whose item is in ``keep`` (training unchanged)."""
    import dataclasses

    from recflow.schema import ITEM_ID

    def only(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame[ITEM_ID].astype(str).isin(keep)]

    return dataclasses.replace(split, validation=only(split.validation), test=only(split.test))


@dataclass
class _Comparison:
    """The champion scored beside the candidate, and the catalogue facts for the gate.

    ``scored``/``candidate``: the champion's and the candidate's metrics on what both know
    (None when no evaluated user's held-out item is shared); ``restricted``: only the shared
    items were ranked (the catalogues differ).
    """

    catalogue: JSONObject
    overlap: Overlap
    scored: _Scored | None
    candidate: _Scored | None
    restricted: bool = False


def _compare_with_champion(
    cfg: PipelineConfig,
    registry: Registry,
    champion: ModelVersionInfo,
    candidate: tuple[ScoreFn, _Scored],
    split: Split,
    features: Features,
    source: str,
) -> _Comparison:
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
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        path = registry.download_version(cfg.registry.model_name, champion.version, Path(tmp))
        champ_scorer = load_scorer(path)
        champ_cat = cat.of_scorer(champ_scorer, cat.recorded_source(champion.tags, run_tags))
        cand_cat = cat.of_scorer(scorer, source)
        overlap = cat.overlap(cand_cat, champ_cat)
        catalogue: JSONObject = {"champion": champ_cat.summary(), "overlap": overlap.to_dict()}
        keep = set(overlap.shared_ids)
        if keep >= {str(i) for i in features.item_ids}:
            champ = _score_all(champ_scorer, split, features, cfg, "champion")
            return _Comparison(catalogue, overlap, champ, scored)
        sub = _held_out_in(split, keep)
        try:
            champ = _score_all(_restricted(champ_scorer, keep), sub, features, cfg, "champion")
            cand = _score_all(_restricted(scorer, keep), sub, features, cfg)
        except DataError as error:  # no evaluated user's held-out item is a shared item
            catalogue["no_comparison"] = str(error)
            return _Comparison(catalogue, overlap, None, None, restricted=True)
    return _Comparison(catalogue, overlap, champ, cand, restricted=True)


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
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

    result: JSONObject = {"k": k}
    source = _data_source(ctx)
    candidate_scorer = load_scorer(ctx.saved_model_dir)
    candidate = _score_all(candidate_scorer, split, features, cfg)
    catalogue: JSONObject = {"candidate": of_scorer(candidate_scorer, source).summary()}
    result["catalogue"] = catalogue
    popularity = _score_all(popularity_scorer(features), split, features, cfg, "popularity")
    # Metrics per scorer: stage -> metric -> value (the champion's None when there is none).
    scored_by = {"candidate": candidate.metrics, "popularity": popularity.metrics}
    result["candidate"] = candidate.metrics
    result["popularity"] = popularity.metrics
    result["champion"] = None
    overlap: Overlap | None = None
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
        catalogue.update(compared.catalogue)
        overlap = compared.overlap
        scored = compared.scored
        if scored is not None:
            result["champion"] = scored_by["champion"] = scored.metrics
            per_user["champion"] = scored.validation.per_user_ndcg()
        if compared.restricted and compared.candidate is not None:
            # The champion rule compares these: both models on the items both know.
            shared = compared.candidate
            result["candidate_on_shared"] = scored_by["candidate_on_shared"] = shared.metrics
            per_user["candidate_on_shared"] = shared.validation.per_user_ndcg()
    result["slices"] = {"candidate": sliced_metrics(candidate.validation, features)}
    # np.savez appends ".npz" to names without it; write into a scratch folder, then move.
    with atomic_directory(ctx.run_dir / "per_user") as scratch:
        np.savez(scratch / PER_USER_FILE, **per_user)
    result["per_user_file"] = str(ctx.run_dir / "per_user" / PER_USER_FILE)

    for who in ("candidate", "popularity", "champion", "candidate_on_shared"):
        if who not in scored_by:
            continue
        for stage, metrics in scored_by[who].items():
            registry.log_metrics(
                mlflow_run, {f"{who}.{stage}.{name}": float(v) for name, v in metrics.items()}
            )
    registry.log_dict(mlflow_run, result, "evaluation/metrics.json")
    ctx.write_json(EVALUATION_JSON, result)
    m = f"ndcg@{k}"
    line = (
        f"evaluate (validation {m}): candidate {candidate.metrics['validation'][m]:.4f}, "
        f"popularity {popularity.metrics['validation'][m]:.4f}"
    )
    if "champion" in scored_by:
        line += (
            f", champion v{result['champion_version']} {scored_by['champion']['validation'][m]:.4f}"
        )
    say(line)
    if overlap and (overlap.share_of_champion < 1.0 or "candidate_on_shared" in result):
        say(
            f"evaluate: catalogues differ: the candidate knows {overlap.candidate_size} items, "
            f"the champion {overlap.champion_size}, shared {overlap.shared} "
            f"({overlap.share_of_champion:.1%} of the champion's); the champion comparison "
            "ranks only the shared items"
        )
    return result


def _data_source(ctx: RunContext) -> str:
    from recflow.catalogue import UNKNOWN_SOURCE

    path = ctx.run_dir / "ingest.json"
    if not path.is_file():
        return UNKNOWN_SOURCE
    return str(ctx.read_json("ingest.json").get("source") or UNKNOWN_SOURCE)
