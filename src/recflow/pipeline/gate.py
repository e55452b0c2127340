"""Stage 7: bless or decline the candidate. A decline is a recorded decision; the DAG's task
then fails with its reasons (``stages.raise_if_declined``) so that nothing is promoted.

With a champion, the rule is decided on a paired bootstrap over users of the per-user
validation NDCG (``per_user_ndcg.npz`` from evaluate) when the gate metric is NDCG; slice
floors read the candidate's sliced validation metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recflow.config import PipelineConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline import stages
from recflow.pipeline.context import RunContext, make_registry, tracking_run
from recflow.pipeline.names import EVALUATION_JSON, TRAIN_JSON
from recflow.registry import Registry

if TYPE_CHECKING:
    import numpy as np


def _per_user(evaluation: Mapping[str, Any], metric: str) -> dict[str, np.ndarray]:
    """Per-user NDCG arrays saved by evaluate (empty when absent or the metric is not NDCG)."""
    import numpy as np

    path = evaluation.get("per_user_file")
    if metric != "ndcg" or not path or not Path(path).exists():
        return {}
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.gate import decide, with_check

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    evaluation = ctx.read_json(EVALUATION_JSON)
    champion = evaluation["champion"]
    per_user = _per_user(evaluation, cfg.gate.metric)
    on_shared = evaluation.get("candidate_on_shared")
    catalogue = evaluation.get("catalogue")
    decision = decide(
        evaluation["candidate"]["validation"],
        evaluation["popularity"]["validation"],
        champion["validation"] if champion else None,
        cfg.gate,
        cfg.eval_k,
        # Candidate and champion per user over the same users (the shared items' users when
        # the catalogues differ).
        candidate_per_user=per_user.get("candidate_on_shared", per_user.get("candidate")),
        champion_per_user=per_user.get("champion"),
        slices=(evaluation.get("slices") or {}).get("candidate"),
        catalogue=catalogue,
        candidate_on_shared=on_shared["validation"] if on_shared else None,
    )
    if (ctx.run_dir / "train.json").exists():
        decision = with_check(decision, ctx.read_json(TRAIN_JSON).get("metrics") or {}, cfg.gate)
    record = decision.to_dict()
    record["champion_version"] = evaluation.get("champion_version")
    record["catalogue"] = catalogue
    record["allow_catalogue_change"] = cfg.gate.allow_catalogue_change
    tags = {"gate.allow_catalogue_change": str(cfg.gate.allow_catalogue_change).lower()}
    overlap = (catalogue or {}).get("overlap")
    if overlap:
        tags["gate.catalogue_overlap"] = f"{overlap['share_of_champion']:.4f}"
    keeps = "the champion" if record["champion_version"] is not None else ""  # first run
    return stages.record_gate(
        registry, mlflow_run, ctx, record, step="gate", keeps_serving=keeps, tags=tags
    )
