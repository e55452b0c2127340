"""Conversions between MLflow's entities and the registry's own, and mlflow's import.

Kept apart from :class:`~recflow.registry.mlflow_registry.MlflowRegistry` (which calls the
tracking store) so each can be read alone; mlflow is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from recflow.registry import base

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Dataset as MlflowDataset
    from mlflow.entities.model_registry import ModelVersion

# Set before mlflow is first imported, so nothing waits on (or reports to) the closed network,
# and downloads do not draw progress bars into Airflow task logs.
ENV_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def import_mlflow() -> ModuleType:
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow

    return mlflow


SCHEMA_SAMPLE_ROWS = 1000  # rows whose values MLflow walks to infer a dataset's column types


def dataset_entity(
    mlflow: ModuleType, df: pd.DataFrame, *, source: str, name: str, digest: str
) -> MlflowDataset:
    """MLflow's dataset entity for ``df`` (what ``from_pandas(df)._to_mlflow_entity()`` gives),
    in time that does not grow with Python work per row.

    MLflow infers the schema by walking every value of each string column in Python (about
    4 minutes for a 20M-event log on this project's benchmark machine). Here the column types
    come from the first ``SCHEMA_SAMPLE_ROWS`` rows plus each column's first non-null value,
    and each column's "required" flag (no nulls) and the profile from the whole frame.
    """
    from mlflow.entities import Dataset

    nulls = df.isna().any()
    rows = set(range(min(len(df), SCHEMA_SAMPLE_ROWS)))
    for col in df.columns:
        present = df[col].notna().to_numpy()
        if present.any():
            rows.add(int(present.argmax()))
    sample = df.iloc[sorted(rows)] if len(df) > len(rows) else df
    info = mlflow.data.from_pandas(sample, source=source, name=name, digest=digest).to_dict()
    if info.get("schema"):
        schema = json.loads(info["schema"])
        for spec in schema.get("mlflow_colspec", []):
            if spec.get("name") in nulls.index:
                spec["required"] = not bool(nulls[spec["name"]])
        info["schema"] = json.dumps(schema)
    full = mlflow.data.from_pandas(df, source=source, name=name, digest=digest)
    info["profile"] = json.dumps(full.profile)
    return Dataset(
        name=info["name"],
        digest=info["digest"],
        source_type=info["source_type"],
        source=info["source"],
        schema=info.get("schema"),
        profile=info["profile"],
    )


def version_info(mv: ModelVersion) -> base.ModelVersionInfo:
    return base.ModelVersionInfo(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id or "",
        source=mv.source or "",
        status=str(mv.status),
        description=mv.description or "",
        tags=dict(mv.tags or {}),
        aliases=tuple(sorted(mv.aliases or ())),
    )


def tag_filter(tags: Mapping[str, str]) -> str:
    """An MLflow filter matching runs with these tags (or more: callers re-check exactly).

    MLflow's filter strings cannot escape quotes, so a value holding a quote is matched with
    LIKE on the part before it.
    """
    clauses = []
    for key, value in tags.items():
        col = f"tags.`{key}`"
        if "'" not in value:
            clauses.append(f"{col} = '{value}'")
        else:
            clauses.append(f"{col} LIKE '{value.split(chr(39))[0]}%'")
    return " and ".join(clauses)


def dataset_source(source: str) -> str:
    with contextlib.suppress(ValueError, TypeError):
        parsed = json.loads(source)
        if isinstance(parsed, dict) and "uri" in parsed:
            return str(parsed["uri"])
    return source
