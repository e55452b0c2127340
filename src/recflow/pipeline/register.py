"""Stage 8: a blessed candidate becomes a registered model version with alias ``challenger``."""

from __future__ import annotations

from typing import Any

from recflow.config import PipelineConfig
from recflow.faults import point
from recflow.pipeline.context import DAG_RUN_TAG, RunContext, make_registry, say, tracking_run
from recflow.pipeline.export import MODEL_ARTIFACT_PATH
from recflow.registry import Registry
from recflow.registry.base import REGISTRATION_COMPLETE, REGISTRATION_PENDING, TAG_REGISTRATION

CHALLENGER = "challenger"


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.contract import CONTRACT_VERSION

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    gate = ctx.read_json("gate.json")
    ingest = ctx.read_json("ingest.json")
    evaluation = ctx.read_json("evaluation.json")
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
    from recflow.reporting import deltas_sentence

    description = description.rstrip(".") + ". " + deltas_sentence(evaluation)
    # Created "pending" (in the same call that creates it); "complete" is written last, and
    # only a complete version can get an alias (registry.base.TAG_REGISTRATION). Killed in
    # between, the re-run gets the same version back (same run and source) and completes it.
    tags[TAG_REGISTRATION] = REGISTRATION_PENDING
    name = cfg.registry.model_name
    version = registry.register_version(
        name, mlflow_run, MODEL_ARTIFACT_PATH, tags=tags, description=description
    )
    point("register:created")
    # The model card travels with the version (its run's artifacts), built from run records.
    from recflow.model_card import CARD_FILE, card_for_run

    registry.log_text(mlflow_run, card_for_run(cfg, ctx, version), CARD_FILE)
    registry.set_tags(mlflow_run, {"registered_version": str(version)})
    registry.set_version_tag(name, version, TAG_REGISTRATION, REGISTRATION_COMPLETE)
    point("register:complete")
    registry.set_alias(name, CHALLENGER, version)
    ctx.write_json("register.json", {"version": version})
    say(f"register: {cfg.registry.model_name} version {version} (alias {CHALLENGER})")
    return {"version": version}
