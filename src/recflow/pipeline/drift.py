"""Stage 2b: drift and skew of the validated batch against the champion's training data.

Always records this batch's reference statistics (``reference_stats.json`` in the MLflow run):
if this run's model becomes champion, later runs compare against them. With a champion whose
run holds reference statistics, every check of ``recflow.drift`` runs; results go to the run's
Data Docs (``data_docs/drift/index.html``), to MLflow (metrics ``drift.*``) and to XCom.

A batch beyond a limit is quarantined: its data is copied to
``<work_dir>/quarantine/<dag>/<run>/`` with ``reason.json`` and ``REASON.txt``, the MLflow run is
tagged ``quarantine=true`` and ended FAILED, and the task raises DriftDetected, so nothing is
trained on it and the champion keeps serving. To release it, re-run with ``accept_drift: true``:
the checks are then reported but do not block.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from recflow.config import PipelineConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import CHAMPION, DRIFT_JSON, INGEST_JSON
from recflow.registry import Registry
from recflow.storage import atomic_directory, safe_name

DOCS_SUBDIR = "drift"


def quarantine_dir(cfg: PipelineConfig, ctx: RunContext) -> Path:
    return cfg.work_dir / "quarantine" / safe_name(ctx.dag_id) / safe_name(ctx.run_id)


def _champion_stats(cfg: PipelineConfig, registry: Registry) -> tuple[JSONObject | None, str]:
    """(the champion's reference statistics or None, why they are missing)."""
    from recflow.drift import REFERENCE_STATS_FILE, load_stats
    from recflow.errors import RegistryError

    champion = registry.get_version_by_alias(cfg.registry.model_name, CHAMPION)
    if champion is None:
        return None, "no champion yet: nothing to compare with"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = registry.download_artifacts(champion.run_id, REFERENCE_STATS_FILE, Path(tmp))
        except RegistryError:
            return None, (
                f"champion v{champion.version} has no {REFERENCE_STATS_FILE} (trained before "
                "drift checks existed); the next promoted model will have them"
            )
        stats = load_stats(path)
    stats["champion_version"] = champion.version
    return stats, f"champion v{champion.version}"


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.data import read_dataset
    from recflow.drift import (
        REFERENCE_STATS_FILE,
        DriftDetected,
        compare,
        html_report,
        read_serving_log,
        reference_stats,
        save_stats,
        serving_log_dir,
    )

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    ds = read_dataset(ctx.data_dir)
    digest = ctx.read_json(INGEST_JSON).get("digest")
    stats = reference_stats(ds, digest=digest)
    stats_path = save_stats(stats, ctx.run_dir / REFERENCE_STATS_FILE)
    registry.log_artifact(mlflow_run, stats_path)

    reference, against = _champion_stats(cfg, registry)
    docs = ctx.data_docs_dir / DOCS_SUBDIR
    if reference is None:
        say(f"drift: skipped ({against})")
        summary: JSONObject = {"status": "skipped", "reason": against, "checks": []}
        _write_docs(docs, html_report([], title="Drift and skew", status="skipped", note=against))
        registry.log_artifacts(mlflow_run, docs, f"data_docs/{DOCS_SUBDIR}")
        registry.set_tags(mlflow_run, {"drift": "skipped"})
        ctx.write_json(DRIFT_JSON, summary)
        return summary

    log_dir = serving_log_dir(cfg.work_dir, cfg.drift.serving_log_dir)
    requests = read_serving_log(log_dir)
    checks = compare(stats, reference, cfg.drift, requests)
    failed = [c for c in checks if not c.passed]
    status = "passed" if not failed else ("accepted" if cfg.drift.accept_drift else "failed")
    note = f"Compared with {against}." + (
        f" Serving logs: {log_dir}." if requests else f" No serving logs under {log_dir}."
    )
    if failed and cfg.drift.accept_drift:
        note += " Limits exceeded but accepted by the operator (accept_drift=true)."
    _write_docs(docs, html_report(checks, title="Drift and skew", status=status, note=note))
    registry.log_artifacts(mlflow_run, docs, f"data_docs/{DOCS_SUBDIR}")
    metrics = {f"drift.{c.name}": c.value for c in checks}
    metrics["drift.failed_checks"] = float(len(failed))
    registry.log_metrics(mlflow_run, metrics)
    summary = {
        "status": status,
        "against": against,
        "champion_version": reference["champion_version"],
        "serving_log": str(log_dir) if requests else None,
        "checks": [c.to_dict() for c in checks],
    }
    registry.log_dict(mlflow_run, summary, "drift/report.json")
    for c in checks:
        say(f"drift: {c.name} = {c.value:.4f} (limit {c.limit}) {'ok' if c.passed else 'EXCEEDED'}")

    if status == "failed":
        reasons = [f"{c.name} = {c.value:.4f} > {c.limit} ({c.detail})" for c in failed]
        where = _quarantine(cfg, ctx, summary, reasons)
        registry.set_tags(
            mlflow_run,
            {
                "drift": "failed",
                "quarantine": "true",
                "quarantine.path": str(where),
                "decision": "quarantined",
            },
        )
        registry.end_run(mlflow_run, "FAILED")
        message = (
            f"drift: batch quarantined in {where}; not trained on, the champion keeps serving. "
            f"Exceeded (vs {against}):\n"
            + "\n".join(f"- {r}" for r in reasons)
            + "\nInvestigate the batch; if the change is real and wanted, re-run with "
            "accept_drift=true (or raise the drift_* limits)."
        )
        say(message)
        raise DriftDetected(message, [c.to_dict() for c in checks], str(where))
    registry.set_tags(mlflow_run, {"drift": status})
    ctx.write_json(DRIFT_JSON, summary)
    say(f"drift: {status} against {against}")
    return {k: v for k, v in summary.items() if k != "checks"}


def _write_docs(folder: Path, page: str) -> None:
    from recflow.storage import atomic_write_text

    atomic_write_text(folder / "index.html", page)


def _quarantine(
    cfg: PipelineConfig, ctx: RunContext, summary: JSONObject, reasons: list[str]
) -> Path:
    import json

    final = quarantine_dir(cfg, ctx)
    with atomic_directory(final) as scratch:
        shutil.copytree(ctx.data_dir, scratch / "data")
        (scratch / "reason.json").write_text(
            json.dumps({"run_id": ctx.run_id, "dag_id": ctx.dag_id, **summary}, indent=2),
            encoding="utf-8",
        )
        (scratch / "REASON.txt").write_text(
            "Quarantined by the drift check: " + "; ".join(reasons) + "\n"
            "Release: re-run the training DAG on this data with accept_drift=true.\n",
            encoding="utf-8",
        )
    return final
