"""Plots (:mod:`.report_plots`) and a Markdown summary of one training run, logged to its MLflow
run under ``report/``.

Runs for promoted and declined candidates alike (the DAG's ``report_run`` task), so that
anyone opening a run in the MLflow UI sees why it was or was not promoted without reading task
logs. Every input is optional: a plot whose data is missing is left out, and the summary says
so. matplotlib (Agg), numpy, TensorFlow and MLflow are imported inside functions: this module
is imported by ``pipeline.register`` and must stay cheap.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from recflow.jsontypes import JSONObject
from recflow.pipeline.names import (
    EVALUATION_JSON,
    GATE_JSON,
    INGEST_JSON,
    REGISTER_JSON,
    REPORT_JSON,
    TRAIN_JSON,
)
from recflow.pipeline.report_plots import (
    STAGES,
    WHO,
    compute_long_tail,
    metric_names,
    plot_long_tail,
    plot_loss_curves,
    plot_metric_comparison,
    plot_slices,
)

if TYPE_CHECKING:
    from recflow.config import PipelineConfig
    from recflow.pipeline.context import RunContext
    from recflow.registry import Registry

REPORT_DIR = "report"
SUMMARY_FILE = "summary.md"


class ReportFiles(TypedDict):
    """What :func:`write_report` wrote: plot file names, the summary file, long-tail shares."""

    plots: list[str]
    summary: str
    long_tail: dict[str, list[float]] | None


# ---------------------------------------------------------------------------------------------
# Reading what the run left behind


def _read(ctx: RunContext, name: str) -> Any:
    """A run file as JSON, or None when the step that writes it did not run (or failed)."""
    path = ctx.run_dir / name
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def metric_deltas(evaluation: Mapping[str, Any], stage: str = "validation") -> dict[str, float]:
    """candidate - champion for every metric both have (empty without a champion).

    When the catalogues differ, both were measured on the shared items (``candidate_on_shared``).
    """
    who = "candidate_on_shared" if evaluation.get("candidate_on_shared") else "candidate"
    cand = (evaluation.get(who) or {}).get(stage) or {}
    champ = (evaluation.get("champion") or {}).get(stage) or {}
    return {
        name: float(cand[name]) - float(champ[name])
        for name in cand
        if name in champ and "@" in name
    }


def deltas_sentence(evaluation: Mapping[str, Any]) -> str:
    """One line for a model version's description: what changed against the champion."""
    deltas = metric_deltas(evaluation)
    if not deltas:
        return "No champion to compare with (first model)."
    version = evaluation.get("champion_version")
    shared = bool(evaluation.get("candidate_on_shared"))
    cand = evaluation["candidate_on_shared" if shared else "candidate"]["validation"]
    parts = [f"{name} {float(cand[name]):.4f} ({delta:+.4f})" for name, delta in deltas.items()]
    on = " (on the items both know)" if shared else ""
    return f"Validation vs champion v{version}{on}: " + ", ".join(parts) + "."


# ---------------------------------------------------------------------------------------------
# Summary


def _fmt(value: object) -> str:
    return f"{float(value):.4f}" if isinstance(value, int | float) else "–"


def summary_markdown(
    *,
    run_id: str,
    ingest: Mapping[str, Any] | None,
    train: Mapping[str, Any] | None,
    evaluation: Mapping[str, Any] | None,
    gate: Mapping[str, Any] | None,
    register: Mapping[str, Any] | None,
    long_tail: Mapping[str, Sequence[float]] | None,
    plots: Sequence[str],
    model: str,
) -> str:
    lines = [f"# Training run `{run_id}`", ""]
    lines += ["## Data", ""]
    if ingest:
        shown = {k: v for k, v in ingest.items() if isinstance(v, str | int | float)}
        for key in ("source", "rows", "users", "items", "digest"):
            if key in shown:
                value = str(shown[key])
                lines.append(f"- {key}: `{value[:16]}`" if key == "digest" else f"- {key}: {value}")
    else:
        lines.append("- no ingest record: the run stopped before reading data")
    lines += ["", "## Decision", ""]
    if gate is None:
        lines.append("**No decision**: the run stopped before the gate (see the task logs).")
    else:
        verdict = "PASSED" if gate.get("passed") else "DECLINED (the champion keeps serving)"
        lines.append(f"**Gate {verdict}**")
        lines += [""] + [f"- {reason}" for reason in gate.get("reasons", [])]
        if register and gate.get("passed"):
            lines += ["", f"Registered as version {register.get('version')}."]
    lines += ["", "## Metrics", ""]
    if evaluation:
        k = evaluation.get("k")
        present = [w for w in WHO if evaluation.get(w)]
        names = [n for n in metric_names(evaluation) if "@" in n]
        champion_label = f"champion v{evaluation.get('champion_version')}"
        header = [champion_label if w == "champion" else w for w in present]
        has_champion = "champion" in present
        cols = ["stage", "metric", *header] + (["Δ vs champion"] if has_champion else [])
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for stage in STAGES:
            deltas = metric_deltas(evaluation, stage)
            for name in names:
                row = [stage, name] + [
                    _fmt((evaluation[w].get(stage) or {}).get(name)) for w in present
                ]
                if has_champion:
                    row.append(f"{deltas[name]:+.4f}" if name in deltas else "–")
                lines.append("| " + " | ".join(row) + " |")
        lines += ["", f"K = {k}; full ranking over the catalogue, training items excluded."]
    else:
        lines.append("No evaluation: the run stopped before it.")
    if train:
        lines += ["", "## Training", ""]
        lines.append(f"- model: {train.get('model', model)}; {train.get('seconds', '?')} s")
        if train.get("final_loss") is not None:
            lines.append(f"- final loss: {float(train['final_loss']):.4f}")
    if long_tail:
        top = long_tail["recommended"]
        lines += [
            "",
            "## Long tail",
            "",
            f"- {top[0]:.0%} of recommendations come from the most popular 10% of items "
            f"(they hold {long_tail['interactions'][0]:.0%} of training interactions); "
            f"{sum(top[5:]):.0%} from the less popular half of the catalogue.",
        ]
    lines += ["", "## Plots", ""]
    lines += [f"- `{REPORT_DIR}/{p}`" for p in plots] or ["- none (no data to plot)"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Entry point used by the DAG


def write_report(cfg: PipelineConfig, ctx: RunContext, out_dir: Path) -> ReportFiles:
    """Write the plots and ``summary.md`` into ``out_dir``; return what was written."""
    from recflow.pipeline.context import say

    out_dir.mkdir(parents=True, exist_ok=True)
    ingest, train = _read(ctx, INGEST_JSON), _read(ctx, TRAIN_JSON)
    evaluation, gate = _read(ctx, EVALUATION_JSON), _read(ctx, GATE_JSON)
    register = _read(ctx, REGISTER_JSON)
    plots: list[str] = []
    if (
        train
        and train.get("history")
        and plot_loss_curves(train["history"], out_dir / "loss_curves.png")
    ):
        plots.append("loss_curves.png")
    long_tail = None
    if evaluation:
        if plot_metric_comparison(evaluation, out_dir / "metrics_vs_champion.png"):
            plots.append("metrics_vs_champion.png")
        metric = f"{cfg.gate.metric}@{evaluation.get('k', cfg.eval_k)}"
        slices = evaluation.get("slices")
        if isinstance(slices, Mapping) and plot_slices(slices, metric, out_dir / "slices.png"):
            plots.append("slices.png")
        say("report: computing long-tail coverage from the exported model's top-k")
        long_tail = compute_long_tail(ctx, int(evaluation.get("k", cfg.eval_k)))
        if long_tail:
            plot_long_tail(
                long_tail, int(evaluation.get("k", cfg.eval_k)), out_dir / "long_tail.png"
            )
            plots.append("long_tail.png")
            (out_dir / "long_tail.json").write_text(json.dumps(long_tail, indent=2) + "\n")
    summary = summary_markdown(
        run_id=ctx.run_id,
        ingest=ingest,
        train=train,
        evaluation=evaluation,
        gate=gate,
        register=register,
        long_tail=long_tail,
        plots=plots,
        model=cfg.train.model,
    )
    (out_dir / SUMMARY_FILE).write_text(summary, encoding="utf-8")
    return {"plots": plots, "summary": SUMMARY_FILE, "long_tail": long_tail}


def log_run_report(
    cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None
) -> JSONObject:
    """Write the report and log it to the DAG run's MLflow run under ``report/``."""
    from recflow.pipeline.context import make_registry, say, tracking_run

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    with tempfile.TemporaryDirectory(prefix="recflow-report-") as tmp:
        result = write_report(cfg, ctx, Path(tmp))
        # Logging into an ended run is fine: MLflow only stores files and tags.
        registry.log_artifacts(mlflow_run, Path(tmp), REPORT_DIR)
    if result["long_tail"]:
        registry.log_metrics(
            mlflow_run, {"report.top_decile_share": result["long_tail"]["recommended"][0]}
        )
    registry.set_tags(mlflow_run, {"report": f"{REPORT_DIR}/{SUMMARY_FILE}"})
    ctx.write_json(REPORT_JSON, {k: v for k, v in result.items() if k != "long_tail"})
    say(
        f"report: logged {len(result['plots'])} plots and {REPORT_DIR}/{SUMMARY_FILE} to "
        f"MLflow run {mlflow_run}"
    )
    return {"plots": result["plots"], "mlflow_run": mlflow_run}
