"""Plots and a Markdown summary of one training run, logged to its MLflow run under ``report/``.

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
from types import ModuleType
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

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from recflow.config import PipelineConfig
    from recflow.pipeline.context import RunContext
    from recflow.registry import Registry

REPORT_DIR = "report"
SUMMARY_FILE = "summary.md"
WHO = ("candidate", "popularity", "champion")
STAGES = ("validation", "test")
DECILES = 10
MAX_LONG_TAIL_USERS = 5000  # enough for a stable share; bounds the time on big data sets
_COLORS = {"candidate": "#1f77b4", "popularity": "#7f7f7f", "champion": "#ff7f0e"}


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


def metric_names(evaluation: Mapping[str, Any]) -> list[str]:
    """Metric keys of the candidate's validation metrics, ranking metrics first."""
    names = list((evaluation.get("candidate") or {}).get("validation", {}))
    return [n for n in names if "@" in n] + [n for n in names if "@" not in n]


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
# Plots (each returns the file it wrote, or None when there is nothing to draw)


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(history: Mapping[str, Sequence[float]], out: Path) -> Path | None:
    series = {name: list(values) for name, values in history.items() if len(values) > 0}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_metric_comparison(evaluation: Mapping[str, Any], out: Path) -> Path | None:
    names = [n for n in metric_names(evaluation) if "@" in n]
    present = [w for w in WHO if evaluation.get(w)]
    if not names or not present:
        return None
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(STAGES), figsize=(11, 4), sharey=True)
    width = 0.8 / len(present)
    x = np.arange(len(names))
    for ax, stage in zip(axes, STAGES, strict=True):
        for i, who in enumerate(present):
            metrics = evaluation[who].get(stage) or {}
            values = [float(metrics.get(n, np.nan)) for n in names]
            label = who
            if who == "champion" and evaluation.get("champion_version") is not None:
                label = f"champion v{evaluation['champion_version']}"
            ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label, color=_COLORS[who])
        ax.set_xticks(x)
        ax.set_xticklabels(names)
        ax.set_title(f"{stage} (full ranking)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Candidate vs popularity vs champion")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_slices(slices: Mapping[str, Any], metric: str, out: Path) -> Path | None:
    """Bars of ``metric`` per slice; ``slices`` maps who -> slice -> metrics (evaluate's form)."""
    rows: dict[str, dict[str, float]] = {}
    for who, per_slice in slices.items():
        if not isinstance(per_slice, Mapping):
            continue
        for name, metrics in per_slice.items():
            if isinstance(metrics, Mapping) and metric in metrics:
                rows.setdefault(str(name), {})[str(who)] = float(metrics[metric])
    if not rows:
        return None
    import numpy as np

    plt = _pyplot()
    whos = sorted({w for r in rows.values() for w in r}, key=lambda w: (w not in WHO, w))
    names = sorted(rows)
    height = 0.8 / len(whos)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.45 * len(names) * max(1, len(whos) / 2)))
    for i, who in enumerate(whos):
        values = [rows[n].get(who, np.nan) for n in names]
        ax.barh(
            y + i * height - 0.4 + height / 2, values, height, label=who, color=_COLORS.get(who)
        )
    labels = []
    for n in names:
        users = next(
            (
                slices[w][n].get("users")
                for w in whos
                if isinstance(slices.get(w), Mapping) and n in slices[w]
            ),
            None,
        )
        labels.append(f"{n} ({int(users)} users)" if users is not None else n)
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.set_xlabel(f"validation {metric}")
    ax.set_title(f"{metric} per slice")
    ax.grid(axis="x", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def popularity_deciles(train_item_idx: npt.ArrayLike, n_items: int) -> np.ndarray:
    """Decile of every catalogue item by training popularity: 0 = the most popular 10%.

    Ties are broken by item index so that the deciles have equal sizes (items without any
    training event all land in the last deciles).
    """
    import numpy as np

    counts = np.bincount(np.asarray(train_item_idx, dtype=np.int64), minlength=n_items)
    order = np.lexsort((np.arange(n_items), -counts))  # most popular first
    deciles = np.empty(n_items, dtype=np.int64)
    deciles[order] = (np.arange(n_items) * DECILES) // max(n_items, 1)
    return deciles


def long_tail_shares(
    recommended: npt.ArrayLike,
    item_index: Mapping[str, int],
    deciles: np.ndarray,
    train_item_idx: npt.ArrayLike,
) -> dict[str, list[float]]:
    """Share of recommendations and of training interactions in each popularity decile."""
    import numpy as np

    idx = [item_index[str(i)] for i in np.asarray(recommended).ravel() if str(i) in item_index]
    rec = np.bincount(deciles[np.asarray(idx, dtype=np.int64)], minlength=DECILES)
    inter = np.bincount(deciles[np.asarray(train_item_idx, dtype=np.int64)], minlength=DECILES)
    return {
        "recommended": (rec / max(rec.sum(), 1)).round(4).tolist(),
        "interactions": (inter / max(inter.sum(), 1)).round(4).tolist(),
    }


def plot_long_tail(shares: Mapping[str, Sequence[float]], k: int, out: Path) -> Path:
    import numpy as np

    plt = _pyplot()
    x = np.arange(1, DECILES + 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, shares["recommended"], 0.4, label=f"candidate's top-{k}", color="#1f77b4")
    ax.bar(x + 0.2, shares["interactions"], 0.4, label="training interactions", color="#bbbbbb")
    ax.axhline(
        1 / DECILES,
        color="black",
        linestyle="--",
        linewidth=1,
        label="each decile's share of the catalogue",
    )
    ax.set_xticks(x)
    ax.set_xlabel("item popularity decile (1 = most popular 10% of items)")
    ax.set_ylabel("share")
    ax.set_title("Long tail: where recommendations come from")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def compute_long_tail(ctx: RunContext, k: int) -> dict[str, list[float]] | None:
    """Decile shares of the exported model's top-k for the validation users (None if absent)."""
    if not (ctx.saved_model_dir / "saved_model.pb").exists() or not ctx.features_dir.exists():
        return None
    import numpy as np

    from recflow.features import load_features
    from recflow.models import load_recommender

    features = load_features(ctx.features_dir)
    users = np.asarray(features.user_ids).astype(str)
    try:
        from recflow.features import load_split
        from recflow.schema import USER_ID

        split = load_split(ctx.split_dir)
        evaluated = split.validation[USER_ID].astype(str).unique()
        users = np.asarray(sorted(set(evaluated) & set(users.tolist())), dtype=object)
    except Exception:  # noqa: BLE001  (no split: every known user still says something)
        pass
    users = users[:MAX_LONG_TAIL_USERS]
    if users.size == 0:
        return None
    recommend = load_recommender(ctx.saved_model_dir)
    top = np.concatenate(
        [recommend(users[i : i + 256])["item_ids"][:, :k] for i in range(0, users.size, 256)]
    )
    item_index = {str(item): j for j, item in enumerate(features.item_ids)}
    deciles = popularity_deciles(features.train_item_idx, features.n_items)
    return long_tail_shares(top, item_index, deciles, features.train_item_idx)


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
