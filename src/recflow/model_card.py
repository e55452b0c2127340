"""A model card (Markdown) for each registered version: what it was trained on, how, how well
(overall and per slice), what the gate decided, and what it cannot do.

Built only from the run's own JSON records (ingest, validation, drift, train, evaluation, gate),
so it holds no user ids: user ids are pseudonyms everywhere and the card names none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recflow.config import PipelineConfig

CARD_FILE = "model_card.md"

KNOWN_LIMITS = (
    "Trained on implicit/explicit interaction logs only: it learns what people did, not why; "
    "popular items are over-represented in what it recommends (popularity bias).",
    "Users unseen in training (cold start) get the most popular items with the reason "
    '"popular with all users"; items without training events are rarely recommended.',
    "Offline metrics come from a chronological leave-last-out split (one held-out item per "
    "user); they estimate ranking quality on the next interaction, not business outcomes.",
    'Reasons ("because you watched X") name the history item most similar to the '
    "recommendation by training co-occurrence: an explanation of association, not of the "
    "network's internal computation.",
    "User ids are keyed pseudonyms (HMAC-SHA256); the model cannot serve callers that do not "
    "apply the same key.",
)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _metrics_table(rows: Mapping[str, Mapping[str, object]]) -> list[str]:
    names = sorted({m for r in rows.values() for m in r if not isinstance(r[m], dict | list)})
    if not names:
        return ["(none recorded)"]
    out = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, r in rows.items():
        out.append(f"| {label} | " + " | ".join(_fmt(r.get(n, "")) for n in names) + " |")
    return out


def build_card(
    cfg: PipelineConfig,
    *,
    version: int | None,
    run_id: str,
    records: Mapping[str, Mapping[str, Any]],
) -> str:
    """Markdown text; ``records`` maps a record name (ingest, validation, drift, train,
    evaluation, gate) to the run's JSON document of that name (missing ones are skipped)."""
    from recflow.contract import CONTRACT_VERSION

    ingest = records.get("ingest", {})
    evaluation = records.get("evaluation", {})
    gate = records.get("gate", {})
    drift = records.get("drift", {})
    train = records.get("train", {})
    validation = records.get("validation", {})
    k = evaluation.get("k", cfg.eval_k)
    lines = [
        f"# Model card: {cfg.registry.model_name}" + (f" version {version}" if version else ""),
        "",
        f"- Model kind: `{cfg.train.model}`; serving contract {CONTRACT_VERSION} "
        "(top-K item ids, scores, titles and reasons per user)",
        f"- Trained by DAG run `{run_id}`",
        "",
        "## Data",
        f"- Source: {ingest.get('source', cfg.data.source)}; dataset digest "
        f"`{str(ingest.get('digest', 'unknown'))[:16]}`",
        f"- {ingest.get('rows', '?')} interactions, {ingest.get('users', '?')} users, "
        f"{ingest.get('items', '?')} items with events, catalogue {ingest.get('catalogue', '?')}",
        "- User ids: keyed pseudonyms (HMAC-SHA256) applied on ingest; personal-data columns "
        "are refused by validation.",
        f"- Validation: {'passed' if validation.get('success', True) else 'failed'}"
        + (
            f" ({validation.get('statistics', {}).get('expectations_evaluated', '?')} expectations)"
            if validation
            else ""
        ),
        f"- Drift against the champion: {drift.get('status', 'not run')}"
        + (f" ({drift.get('reason') or drift.get('against', '')})" if drift else ""),
    ]
    for c in drift.get("checks", []) or []:
        lines.append(f"  - {c['name']}: {c['value']:.4f} (limit {c['limit']})")
    t = cfg.train
    lines += [
        "",
        "## Training",
        f"- epochs {t.epochs}, batch size {t.batch_size}, embedding size {t.embedding_dim}, "
        f"learning rate {t.learning_rate}, negatives per positive {t.negatives_per_positive}, "
        f"seed {t.seed}",
        f"- Chronological leave-last-out split; training took {train.get('seconds', '?')} s"
        + (f", final loss {train['final_loss']:.4f}" if train.get("final_loss") else ""),
        *(f"- Note: {note}" for note in train.get("notes", []) or []),
        "",
        f"## Metrics (full ranking, K = {k})",
    ]
    rows: dict[str, Mapping[str, object]] = {}
    for who in ("candidate", "popularity", "champion"):
        per_stage = evaluation.get(who) or {}
        for stage in ("validation", "test"):
            if isinstance(per_stage.get(stage), Mapping):
                rows[f"{who} ({stage})"] = per_stage[stage]
    lines += _metrics_table(rows)
    slices = (evaluation.get("slices") or {}).get("candidate") or {}
    if slices:
        lines += ["", "### Per slice (candidate, validation)"]
        flat: dict[str, Mapping[str, object]] = {}
        for name, value in slices.items():
            if isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values()):
                for sub, metrics in value.items():
                    flat[f"{name}={sub}"] = metrics
            elif isinstance(value, Mapping):
                flat[str(name)] = value
        lines += _metrics_table(flat)
    lines += ["", "## Gate", f"- Decision: {'passed' if gate.get('passed') else 'declined'}"]
    lines += [f"- {r}" for r in gate.get("reasons", [])]
    lines += ["", "## Known limits"] + [f"- {x}" for x in KNOWN_LIMITS]
    return "\n".join(lines) + "\n"


def card_for_run(cfg: PipelineConfig, ctx: Any, version: int | None) -> str:
    """The card from the JSON records a training DAG run left in ``ctx.run_dir``."""
    records: dict[str, Mapping[str, Any]] = {}
    for name in ("ingest", "validation", "drift", "train", "evaluation", "gate"):
        path = ctx.run_dir / f"{name}.json"
        if path.is_file():
            records[name] = ctx.read_json(path.name)
    return build_card(cfg, version=version, run_id=ctx.run_id, records=records)
