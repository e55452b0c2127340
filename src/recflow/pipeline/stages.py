"""Stage bodies both pipelines share: validation and gate records, registration, and the
serving steps (deploy as canary, verify, promote) with their failure records.

Each pipeline's stage module keeps what is its own (what to validate, the gate's rule, the
tags of a version, the verification requests) and hands the rest to these functions.
``step`` is the name in progress lines; ``noun`` what a version is called in them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from recflow.errors import GateDeclined, RecflowError, ValidationFailed, is_transient
from recflow.jsontypes import JSONObject, JSONValue
from recflow.pipeline.context import RunContext, make_promoter, make_registry, say, tracking_run
from recflow.pipeline.names import (
    CHALLENGER,
    CHAMPION,
    GATE_JSON,
    PREVIOUS,
    REGISTER_JSON,
    VALIDATION_JSON,
)
from recflow.promotion import STABLE
from recflow.registry.base import check_complete
from recflow.work_layout import WorkLayout

if TYPE_CHECKING:
    import numpy as np

    from recflow.promotion import Promotion
    from recflow.registry import Registry

Report = TypeVar("Report")
Record = TypeVar("Record", bound=Mapping[str, object])
Cfg = TypeVar("Cfg", bound=WorkLayout)


def open_run(cfg: WorkLayout, ctx: RunContext, registry: Registry | None) -> tuple[Registry, str]:
    """The registry (the given one, else the configured) and this DAG run's tracking run."""
    registry = registry or make_registry(cfg)
    return registry, tracking_run(cfg, ctx, registry)


def records(ctx: RunContext, *names: str) -> list[Any]:
    """Earlier stages' records from the run folder, in the order named."""
    return [ctx.read_json(name) for name in names]


def registered_version(ctx: RunContext) -> int:
    """The version this run registered (the register stage's record)."""
    return int(ctx.read_json(REGISTER_JSON)["version"])


# -- validation and gate ---------------------------------------------------------------------
def record_validation(
    registry: Registry,
    mlflow_run: str,
    ctx: RunContext,
    step: str,
    validate: Callable[[], Report],
    summary: Callable[[Report], JSONObject],
) -> Report:
    """Run ``validate``; keep the evidence with the run either way. A failure ends the run
    FAILED and raises: nothing downstream may run."""
    try:
        report = validate()
    except ValidationFailed as failure:
        if ctx.data_docs_dir.exists():
            registry.log_artifacts(mlflow_run, ctx.data_docs_dir, "data_docs")
        registry.log_dict(mlflow_run, {"failures": failure.failures}, "validation/failures.json")
        registry.set_tags(mlflow_run, {"validation": "failed", "decision": "failed"})
        registry.end_run(mlflow_run, "FAILED")
        say(f"{step}: FAILED\n{failure}")
        raise
    if ctx.data_docs_dir.exists():
        registry.log_artifacts(mlflow_run, ctx.data_docs_dir, "data_docs")
    record = summary(report)
    registry.log_dict(mlflow_run, record, "validation/report.json")
    registry.set_tags(mlflow_run, {"validation": "passed"})
    ctx.write_json(VALIDATION_JSON, record)
    return report


def record_gate(
    registry: Registry,
    mlflow_run: str,
    ctx: RunContext,
    record: Record,
    *,
    step: str,
    headline: str = "",
    keeps_serving: str = "the champion",
    tags: Mapping[str, str] | None = None,
) -> Record:
    """Log a gate decision (``record`` has ``passed`` and ``reasons``). A decline ends the
    tracking run FINISHED with tag ``decision=declined``; the DAG task then raises
    :func:`raise_if_declined`'s ``GateDeclined`` so the promotion steps never run.
    ``keeps_serving`` names what serves meanwhile; empty when nothing does (no champion yet)."""
    passed, listed = bool(record["passed"]), record["reasons"]
    reasons = [str(r) for r in listed] if isinstance(listed, list | tuple) else [str(listed)]
    registry.log_dict(mlflow_run, record, "gate/decision.json")
    registry.set_tags(
        mlflow_run,
        {
            "gate": "passed" if passed else "declined",
            "gate.reasons": "; ".join(reasons)[:4900],
            **(tags or {}),
        },
    )
    ctx.write_json(GATE_JSON, record)
    say(f"{step}: {'PASSED' if passed else 'DECLINED'}{headline}")
    for reason in reasons:
        say(f"{step}:   - {reason}")
    if not passed:
        registry.set_tags(mlflow_run, {"decision": "declined"})
        registry.end_run(mlflow_run, "FINISHED")
        serving = f"{keeps_serving} keeps serving" if keeps_serving else "nothing serves yet"
        say(f"{step}: {serving}; the promotion steps do not run")
    return record


def raise_if_declined(record: Mapping[str, Any], *, step: str) -> dict[str, Any]:
    """``passed`` and ``reasons`` of ``record`` (from :func:`record_gate`; small enough for an
    XCom) if the candidate passed, else ``GateDeclined``.

    Called by the gate task after the decision is recorded, so nothing is lost; the task then
    fails (``AirflowFailException`` through ``retries.fail_fast``, never retried) and the
    promotion steps after it do not run (upstream_failed)."""
    reasons = [str(r) for r in record["reasons"]]
    if record["passed"]:
        return {"passed": True, "reasons": reasons}
    raise GateDeclined(
        f"{step}: gate DECLINED the candidate: {'; '.join(reasons) or 'no reason given'}. "
        "The decision is recorded (MLflow tags gate=declined and gate.reasons, artifact "
        "gate/decision.json; gate.json in the run folder); what serves keeps serving and the "
        "promotion steps do not run. To promote a candidate, change the data or the gate "
        "settings and trigger a new run.",
        reasons=reasons,
    )


def register(
    cfg: WorkLayout,
    ctx: RunContext,
    registry: Registry,
    mlflow_run: str,
    artifact_path: str,
    tags: Mapping[str, object],
    description: str,
    *,
    step: str,
    on_created: Callable[[int], None] | None = None,
) -> int:
    """Register the run's model as a new version with alias ``challenger``, crash-safely.

    Created "pending" (in the same call that creates it); "complete" is written last, and only
    a complete version can get an alias (registry.base.TAG_REGISTRATION). Killed in between,
    the re-run gets the same version back (same run and source) and completes it.
    ``on_created`` runs in between (e.g. the model card).
    """
    from recflow.faults import point
    from recflow.registry.base import (
        REGISTRATION_COMPLETE,
        REGISTRATION_PENDING,
        TAG_REGISTRATION,
    )

    name = cfg.registry.model_name
    version = registry.register_version(
        name,
        mlflow_run,
        artifact_path,
        tags={**tags, TAG_REGISTRATION: REGISTRATION_PENDING},
        description=description,
    )
    point(f"{step}:created")
    if on_created is not None:
        on_created(version)
    registry.set_tags(mlflow_run, {"registered_version": str(version)})
    registry.set_version_tag(name, version, TAG_REGISTRATION, REGISTRATION_COMPLETE)
    point(f"{step}:complete")
    registry.set_alias(name, CHALLENGER, version)
    ctx.write_json(REGISTER_JSON, {"version": version})
    say(f"{step}: {name} version {version} (alias {CHALLENGER})")
    return version


# -- serving steps ---------------------------------------------------------------------------
def record_serving_failure(
    registry: Registry, model_name: str, mlflow_run: str, version: int, step: str, error: Exception
) -> None:
    """A failed deploy/verify step: the version says so, loses ``challenger``, the run fails."""
    registry.set_version_tag(model_name, version, "serving", f"{step} failed")
    registry.delete_alias(model_name, CHALLENGER)
    registry.set_tags(
        mlflow_run, {"decision": f"{step} failed", "serving.error": str(error)[:4900]}
    )
    registry.end_run(mlflow_run, "FAILED")
    say(f"{step}: FAILED: {error}")


@contextmanager
def _recording_failure(
    cfg: WorkLayout, ctx: RunContext, registry: Registry, version: int, step: str
) -> Iterator[None]:
    """Re-raise a RecflowError from a serving step after recording it, unless it is
    transient: Airflow retries those (recflow.pipeline.retries), so nothing a retry must undo
    is recorded."""
    try:
        yield
    except RecflowError as error:
        if is_transient(error):
            say(f"{step}: transient failure, to be retried: {error}")
        else:
            run = tracking_run(cfg, ctx, registry)
            record_serving_failure(registry, cfg.registry.model_name, run, version, step, error)
        raise


@dataclass(frozen=True)
class Verification:
    """What a canary must answer: requests, the exported model's answers, and for the record
    what was checked (``checked`` in the progress line, ``summary`` in the stage's result)."""

    inputs: Mapping[str, np.ndarray]
    expected: Mapping[str, np.ndarray]
    checked: str
    summary: JSONObject


@dataclass(frozen=True)
class Deployment(Generic[Cfg]):
    """The serving steps of one pipeline: deploy as canary, verify, promote to stable.

    ``verification`` builds the requests and expected answers for this model's contract;
    ``promoter`` makes a promoter that compares by that contract.
    """

    verification: Callable[[Cfg, RunContext], Verification]
    promoter: Callable[[Cfg], Promotion] = make_promoter
    # verify's result when a re-run finds the version stable already (verified before)
    already_stable: Mapping[str, JSONValue] = field(default_factory=dict)
    noun: str = "version"
    deploy_step: str = "deploy"
    verify_step: str = "verify"
    promote_step: str = "promote"

    def _seams(
        self, cfg: Cfg, registry: Registry | None, promoter: Promotion | None
    ) -> tuple[Registry, Promotion]:
        return registry or make_registry(cfg), promoter or self.promoter(cfg)

    def deploy_canary(
        self,
        cfg: Cfg,
        ctx: RunContext,
        registry: Registry | None = None,
        promoter: Promotion | None = None,
    ) -> JSONObject:
        """Install the registered version and load it under label ``canary``."""
        registry, promoter = self._seams(cfg, registry, promoter)
        version, step, noun = registered_version(ctx), self.deploy_step, self.noun
        # Nothing reaches serving whose registration did not complete (registry.base).
        check_complete(registry.get_version(cfg.registry.model_name, version), "deploy_canary")
        say(f"{step}: copying {noun} {version} into {promoter.model_dir} and loading it as canary")
        with _recording_failure(cfg, ctx, registry, version, "deploy_canary"):
            deployed = promoter.deploy_canary(ctx.saved_model_dir, version)
        if not deployed:  # a re-run after promotion
            say(f"{step}: {noun} {version} is already stable: nothing to do")
            return {"version": version}
        registry.set_version_tag(cfg.registry.model_name, version, "serving", "canary")
        say(f"{step}: {noun} {version} is AVAILABLE under label canary")
        return {"version": version}

    def verify_canary(
        self,
        cfg: Cfg,
        ctx: RunContext,
        registry: Registry | None = None,
        promoter: Promotion | None = None,
    ) -> JSONObject:
        """The canary must answer as the exported model did, by the promoter's comparison."""
        registry, promoter = self._seams(cfg, registry, promoter)
        version = registered_version(ctx)
        if promoter.label(STABLE) == version:  # a re-run after promotion: verified before
            say(f"{self.verify_step}: {self.noun} {version} is already stable: nothing to do")
            return {"version": version, **self.already_stable}
        check = self.verification(cfg, ctx)
        with _recording_failure(cfg, ctx, registry, version, "verify_canary"):
            promoter.verify_canary(version, check.inputs, check.expected)
        registry.set_version_tag(cfg.registry.model_name, version, "serving.verified", "true")
        say(
            f"{self.verify_step}: canary v{version} answered {check.checked} as the exported "
            "model does"
        )
        return {"version": version, **check.summary}

    def promote(
        self,
        cfg: Cfg,
        ctx: RunContext,
        registry: Registry | None = None,
        promoter: Promotion | None = None,
    ) -> JSONObject:
        """Move label ``stable`` and alias ``champion`` to the verified canary."""
        registry, promoter = self._seams(cfg, registry, promoter)
        mlflow_run = tracking_run(cfg, ctx, registry)
        version = registered_version(ctx)
        previous_stable = promote_version(cfg, registry, promoter, mlflow_run, version)
        say(
            f"{self.promote_step}: {self.noun} {version} is now stable and champion"
            + (f"; v{previous_stable} kept loaded as previous" if previous_stable else "")
        )
        return {"version": version, "previous": previous_stable}


def promote_version(
    cfg: WorkLayout, registry: Registry, promoter: Promotion, mlflow_run: str, version: int
) -> int | None:
    """Move label ``stable`` and alias ``champion`` to a verified canary.

    The champion being replaced keeps alias ``previous``; the MLflow run ends FINISHED.
    Returns the version that was stable before, if any.
    """
    name = cfg.registry.model_name
    check_complete(registry.get_version(name, version), f"promote {name} v{version}")
    old_champion = registry.get_version_by_alias(name, CHAMPION)
    previous_stable = promoter.promote_stable(version)
    if old_champion is not None and old_champion.version == version:
        # A re-run of a finished promotion: serving and aliases are in place already.
        registry.set_tags(mlflow_run, {"decision": "promoted"})
        registry.end_run(mlflow_run, "FINISHED")
        return previous_stable
    if old_champion is not None:
        registry.set_alias(name, PREVIOUS, old_champion.version)
        registry.set_version_tag(name, old_champion.version, "serving", PREVIOUS)
    registry.set_alias(name, CHAMPION, version)
    registry.delete_alias(name, CHALLENGER)
    registry.set_version_tag(name, version, "serving", "stable")
    info = registry.get_version(name, version)
    registry.update_description(
        name,
        version,
        (info.description or "")
        + " Promoted: verified as canary over gRPC, now serving as stable"
        + (f" (replacing v{previous_stable})." if previous_stable else "."),
    )
    registry.set_tags(mlflow_run, {"decision": "promoted"})
    registry.end_run(mlflow_run, "FINISHED")
    return previous_stable
