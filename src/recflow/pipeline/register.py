"""Stage 8: a blessed candidate becomes a registered model version with alias ``challenger``."""

from __future__ import annotations

from recflow.config import PipelineConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline import stages
from recflow.pipeline.context import RunContext
from recflow.pipeline.export import MODEL_ARTIFACT_PATH
from recflow.pipeline.names import DAG_RUN_TAG, EVALUATION_JSON, GATE_JSON, INGEST_JSON
from recflow.registry import Registry


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.contract import CONTRACT_VERSION

    registry, mlflow_run = stages.open_run(cfg, ctx, registry)
    gate, ingest, evaluation = stages.records(ctx, GATE_JSON, INGEST_JSON, EVALUATION_JSON)
    k = evaluation["k"]
    cand = evaluation["candidate"]["validation"]
    tags = {
        "gate": "passed",
        "dataset.digest": ingest["digest"],
        "serving.contract_version": CONTRACT_VERSION,
        "model.kind": cfg.train.model,
        DAG_RUN_TAG: ctx.run_id,
        f"validation.ndcg@{k}": f"{cand[f'ndcg@{k}']:.5f}",
        f"validation.hr@{k}": f"{cand[f'hr@{k}']:.5f}",
    }
    # The catalogue this version knows (recflow.catalogue): what the next gate compares with.
    candidate_catalogue = (evaluation.get("catalogue") or {}).get("candidate")
    if candidate_catalogue:
        from recflow import catalogue as cat

        tags[cat.TAG_DIGEST] = candidate_catalogue["digest"]
        tags[cat.TAG_SIZE] = str(candidate_catalogue["size"])
        tags[cat.TAG_SOURCE] = candidate_catalogue["source"]
    if gate.get("allow_catalogue_change"):
        tags["gate.allow_catalogue_change"] = "true"
    champion_version = gate.get("champion_version")
    description = (
        f"{cfg.train.model} trained by DAG run {ctx.run_id} on dataset {ingest['digest'][:12]} "
        f"({ingest['rows']} interactions). Gate passed: " + "; ".join(gate["reasons"])
    )
    if champion_version is not None:
        description += f". Challenges champion v{champion_version}."
    # What changed, in numbers: a reader of the registry should not need to open the run.
    from recflow.pipeline.reporting import deltas_sentence

    description = description.rstrip(".") + ". " + deltas_sentence(evaluation)
    from recflow.model_card import CARD_FILE, card_for_run

    def card(version: int) -> None:
        # The model card travels with the version (its run's artifacts), from run records.
        registry.log_text(mlflow_run, card_for_run(cfg, ctx, version), CARD_FILE)

    version = stages.register(
        cfg,
        ctx,
        registry,
        mlflow_run,
        MODEL_ARTIFACT_PATH,
        tags,
        description,
        step="register",
        on_created=card,
    )
    return {"version": version}
