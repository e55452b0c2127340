"""The recsys_ingest DAG's logic: land new batches into the append-only history.

A batch is an interactions file (csv/parquet) dropped into the landing folder (default
``<work_dir>/landing``) or named by the ``data_path`` param. Items come from ``items_path`` or
an ``items.csv``/``items.parquet`` beside the batch. Each batch is read, refused if it holds
personal data, pseudonymised, validated with the training DAG's expectations and, if it
passes, appended to the history (``recflow.data.history``). A batch already in the history
changes nothing. When at least one batch is new, the DAG updates the asset
``HISTORY_ASSET_URI``; the training DAG is scheduled on it and reads the "history" source.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from recflow.config import PipelineConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, say
from recflow.pipeline.names import LANDING_JSON

HISTORY_ASSET_URI = "recflow://history/interactions"
ITEMS_NAMES = ("items.csv", "items.parquet")
BATCH_SUFFIXES = (".csv", ".parquet", ".pq", ".tsv")
# Trigger-form params of the ingest DAG (a subset of the training DAG's, same meaning).
LANDING_PARAMS = (
    "data_path",
    "items_path",
    "column_mapping",
    "min_users",
    "min_items",
    "min_interactions",
    "min_rating",
    "max_rating",
    "work_dir",
)


def landing_params() -> dict[str, object]:
    from recflow.pipeline.params import training_params

    params = training_params()
    out = {name: params[name] for name in LANDING_PARAMS}
    return out


def landing_dir(cfg: PipelineConfig) -> Path:
    return cfg.work_dir / "landing"


def _batches(cfg: PipelineConfig) -> list[Path]:
    if cfg.data.path:
        p = Path(cfg.data.path)
        return sorted(p.iterdir()) if p.is_dir() else [p]
    folder = landing_dir(cfg)
    if not folder.is_dir():
        return []
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and f.name.lower().endswith(BATCH_SUFFIXES) and f.name not in ITEMS_NAMES
    )


def _items_for(cfg: PipelineConfig, batch: Path) -> Path:
    from recflow.errors import DataSourceError

    if cfg.data.items_path:
        return Path(cfg.data.items_path)
    for name in ITEMS_NAMES:
        if (batch.parent / name).is_file():
            return batch.parent / name
    raise DataSourceError(
        f"landing {batch}: expected an item table (items_path param, or items.csv / "
        f"items.parquet beside the batch), found none in {batch.parent}"
    )


def land(cfg: PipelineConfig, ctx: RunContext) -> JSONObject:
    """Land every batch; returns ``{"new": [...], "existing": [...], "history": path}``.

    Any batch failing PII checks or validation fails the task (nothing of it is appended);
    batches landed before it in the same run stay landed (each append is atomic on its own).
    """
    import time

    from recflow.data import dataset_digest
    from recflow.data.history import append_batch, batch_id
    from recflow.errors import DataSourceError
    from recflow.pipeline.ingest import landed_history_dir, load_private
    from recflow.validation import validate_dataset

    history = landed_history_dir(cfg)
    files = _batches(cfg)
    if not files:
        raise DataSourceError(
            f"landing: expected batch files (*.csv, *.parquet) in {landing_dir(cfg)} or a "
            "data_path param, found none; drop a batch there or pass data_path"
        )
    new: list[str] = []
    existing: list[str] = []
    for batch in files:
        fmt = "parquet" if batch.suffix.lower() in (".parquet", ".pq") else "csv"
        bcfg = dataclasses.replace(
            cfg,
            data=dataclasses.replace(
                cfg.data, source=fmt, path=str(batch), items_path=str(_items_for(cfg, batch))
            ),
        )
        ds, _ = load_private(bcfg)  # PII refused and ids pseudonymised before any write
        digest = dataset_digest(ds)
        bid = batch_id(digest)
        docs = ctx.run_dir / "data_docs" / bid
        validate_dataset(ds, cfg.validation, docs, now=int(time.time()))
        folder, is_new = append_batch(
            history,
            ds,
            digest,
            {
                "source_file": batch.name,
                "rows": int(len(ds.interactions)),
                "dag_run_id": ctx.run_id,
            },
        )
        (new if is_new else existing).append(bid)
        say(
            f"landing: {batch.name} -> {folder} ({'new' if is_new else 'already landed, unchanged'})"
        )
    ctx.write_json(LANDING_JSON, {"new": new, "existing": existing, "history": str(history)})
    return {"new": new, "existing": existing, "history": str(history)}
