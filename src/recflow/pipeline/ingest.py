"""Stage 1: read the configured source into canonical tables under the run's folder.

Privacy comes first: columns that look like personal data are refused (recflow.validation.pii)
and user ids are replaced by keyed pseudonyms (recflow.privacy) BEFORE the first write, so no
raw user id reaches the run folder, MLflow, the Data Docs, the model or the logs. The "history"
source holds batches the recsys_ingest DAG already pseudonymised; they are read as they are.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from recflow import config as config_mod
from recflow.config import PipelineConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import INGEST_JSON
from recflow.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

    from recflow.types import Dataset

RAW_SAMPLE_ROWS = 1000


def landed_history_dir(cfg: PipelineConfig) -> Path:
    """Where landing appends batches: always under the work dir, whatever the run reads."""
    return cfg.work_dir / "history"


def history_dir(cfg: PipelineConfig) -> Path:
    if cfg.data.source == "history" and cfg.data.path:
        return Path(cfg.data.path)
    return landed_history_dir(cfg)


def _raw_sample(path: str, column_mapping: dict[str, str]) -> pd.DataFrame | None:
    """The first rows of a csv/parquet interactions file with every column the file has: the
    reader keeps only canonical columns, but personal data in the file must still be refused."""
    import pandas as pd

    p = Path(path)
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p).head(RAW_SAMPLE_ROWS)
        else:
            sep = "\t" if ".tsv" in p.name.lower() else ","
            df = pd.read_csv(p, sep=sep, dtype=str, nrows=RAW_SAMPLE_ROWS, keep_default_na=False)
    except (OSError, ValueError):
        return None  # the reader already accepted the file; a sample we cannot take adds nothing
    # Columns mapped to a canonical name are handled as that column (user_id is pseudonymised).
    return df.drop(columns=[c for c in column_mapping.values() if c in df.columns])


def load_private(cfg: PipelineConfig) -> tuple[Dataset, bool]:
    """(the configured source with pseudonymous user ids, whether ingest pseudonymised it).

    Raises PersonalDataFound before anything is written when a column looks like personal data.
    """
    from recflow.data import load_source
    from recflow.privacy import load_key, pseudonymise_dataset
    from recflow.validation.pii import check_tables, raise_if_found, scan_dataset

    if cfg.data.source == "history":
        from recflow.data.history import read_history

        return read_history(history_dir(cfg)), False
    ds = load_source(cfg.data)
    findings = scan_dataset(ds)
    raise_if_found(findings)
    if cfg.data.source in ("csv", "parquet") and cfg.data.path:
        raw = _raw_sample(cfg.data.path, dict(cfg.data.column_mapping))
        if raw is not None:
            # Only the names and values of extra columns: canonical ones were checked above.
            check_tables({"interactions (source file)": raw})
    return pseudonymise_dataset(ds, load_key(cfg.work_dir)), True


def run(
    cfg: PipelineConfig,
    ctx: RunContext,
    registry: Registry | None = None,
    *,
    triggered_by_asset: bool = False,
) -> JSONObject:
    """``triggered_by_asset``: the run was started by new history (the recsys_ingest DAG's
    asset), so it reads the "history" source whatever the data_source param says."""
    from recflow.data import dataset_digest, write_dataset
    from recflow.schema import ITEM_ID, USER_ID

    if triggered_by_asset and cfg.data.source != "history":
        cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, source="history", path=None)
        )
    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    registry.log_params(mlflow_run, config_mod.to_dict(cfg))

    source = (
        cfg.data.source
        if cfg.data.source == "synthetic"
        else f"{cfg.data.source}:{cfg.data.path or history_dir(cfg)}"
    )
    say(f"ingest: reading {source}")
    ds, pseudonymised = load_private(cfg)
    write_dataset(ds, ctx.data_dir)
    digest = dataset_digest(ds)
    inter = ds.interactions
    summary: JSONObject = {
        "data_dir": str(ctx.data_dir),
        "digest": digest,
        "source": source,
        "rows": int(len(inter)),
        "users": int(inter[USER_ID].nunique()),
        "items": int(inter[ITEM_ID].nunique()),
        "catalogue": int(len(ds.items)),
        "mlflow_run_id": mlflow_run,
        "user_ids": "pseudonymised (HMAC-SHA256)",
    }
    registry.set_tags(
        mlflow_run,
        {"dataset.digest": digest, "dataset.source": source, "privacy.user_ids": "pseudonymised"},
    )
    registry.log_dataset(
        mlflow_run,
        inter,
        name="interactions",
        digest=digest,
        source=str(ctx.data_dir),
        context="training",
    )
    ctx.write_json(INGEST_JSON, summary)
    say(
        f"ingest: {summary['rows']} interactions, {summary['users']} users, "
        f"{summary['items']} items -> {ctx.data_dir} (user ids "
        + ("pseudonymised on ingest" if pseudonymised else "pseudonymised when landed")
        + ")"
    )
    return summary
