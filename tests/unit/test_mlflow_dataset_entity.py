"""The dataset entity ingest logs to MLflow: schema from a bounded sample, equal to MLflow's own."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from recflow.registry.mlflow_entities import SCHEMA_SAMPLE_ROWS, dataset_entity, import_mlflow


def _frame(rows: int) -> pd.DataFrame:
    users = pd.array([f"u{i % 7}" for i in range(rows)], dtype="string")
    users[rows - 3] = pd.NA  # a null far beyond the sample: the column is not "required"
    late = pd.Series([None] * rows, dtype=object)
    late.iloc[rows - 5 :] = "x"  # null in the whole sample, typed only by its late values
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": [str(i % 11) for i in range(rows)],
            "timestamp": np.arange(rows, dtype=np.int64),
            "rating": np.linspace(1.0, 5.0, rows),
            "late": late,
        }
    )


@pytest.mark.parametrize("rows", [5, SCHEMA_SAMPLE_ROWS * 3])
def test_entity_equals_mlflows_full_inference(rows: int) -> None:
    mlflow = import_mlflow()
    df = _frame(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = mlflow.data.from_pandas(df, source="/data", name="n", digest="d")
        want = expected._to_mlflow_entity()
        got = dataset_entity(mlflow, df, source="/data", name="n", digest="d")
    assert got.to_dictionary() == want.to_dictionary()
    spec = {c["name"]: c for c in json.loads(got.schema)["mlflow_colspec"]}
    assert spec["user_id"]["required"] is False
    assert spec["late"]["type"] == "string"
    assert json.loads(got.profile)["num_rows"] == rows
