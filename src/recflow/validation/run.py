"""Run the suites with GX Core, write Data Docs, and turn the results into a report or an error."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from recflow.config import ValidationConfig
from recflow.errors import DataError, ValidationFailed
from recflow.jsontypes import JSONObject
from recflow.schema import ITEM_ID, USER_ID
from recflow.validation import expectations as ex

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuite, ExpectationValidationResult
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    from recflow.types import Dataset

DATASOURCE = "recflow"
# Where a file context rooted in docs_dir puts its local Data Docs site.
DOCS_SUBDIR = Path("gx") / "uncommitted" / "data_docs" / "local_site"


def import_gx() -> ModuleType:
    """Import great_expectations with usage statistics off (the machines have no internet)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations

    return great_expectations


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    statistics: dict[str, int]
    results: list[dict[str, Any]] = field(default_factory=list)
    data_docs_index: str = ""

    def to_dict(self) -> JSONObject:
        return {
            "success": self.success,
            "statistics": dict(self.statistics),
            "results": [dict(r) for r in self.results],
            "data_docs_index": self.data_docs_index,
        }


def validate_dataset(
    ds: Dataset, cfg: ValidationConfig, docs_dir: Path, *, now: int | None = None
) -> ValidationReport:
    """Validate every table of ``ds``; write Data Docs under ``docs_dir``.

    Returns the report when every expectation holds; otherwise raises ValidationFailed (after
    the Data Docs are written) listing each failed expectation with sample offending rows.
    ``now`` (unix seconds, default the current time) bounds timestamps from above.
    """
    # Personal data is refused before anything (Data Docs included) is written about it.
    from recflow.validation.pii import check_dataset

    check_dataset(ds)
    tables = {ex.INTERACTIONS: _prepare(ds.interactions), ex.ITEMS: _prepare(ds.items)}
    if ds.users is not None:
        tables[ex.USERS] = _prepare(ds.users)
    suites = ex.build_suites(cfg, with_users=ds.users is not None)
    params = ex.suite_parameters(ds, cfg, now)

    started = time.perf_counter()
    context = _file_context(Path(docs_dir))
    results: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for table, suite in suites.items():
        raw = _run_checkpoint(context, table, suite, tables[table], params)
        unreadable = _unreadable(getattr(ds, table))
        for r in raw:
            row = _result_row(table, r, list(tables[table].columns))
            results.append(row)
            if not row["success"]:
                failure = _failure(row, r, tables[table], cfg.sample_rows)
                if row["expectation"] == _NOT_NULL and row["column"] in unreadable:
                    failure["unreadable"] = unreadable[row["column"]]
                failures.append(failure)
    index = _docs_index(context, Path(docs_dir))

    statistics = _statistics(ds, cfg)
    statistics["expectations_evaluated"] = len(results)
    statistics["expectations_failed"] = len(failures)
    statistics["validation_ms"] = int((time.perf_counter() - started) * 1000)
    report = ValidationReport(
        success=not failures, statistics=statistics, results=results, data_docs_index=str(index)
    )
    if failures:
        raise ValidationFailed(_message(failures, index), failures=failures, data_docs=str(index))
    return report


# ---------------------------------------------------------------------------------------------
# GX plumbing


def _file_context(docs_dir: Path) -> AbstractDataContext:
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    docs_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    # In memory only: tqdm bars would flood the Airflow task log.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _run_checkpoint(
    context: AbstractDataContext,
    table: str,
    suite: ExpectationSuite,
    df: pd.DataFrame,
    params: dict[str, Any],
) -> list[ExpectationValidationResult]:
    """Run one table's checkpoint; returns the ExpectationValidationResult objects."""
    gx = import_gx()
    from great_expectations.checkpoint import UpdateDataDocsAction

    # A checkpoint's batch parameters go to all its validation definitions, and each table is
    # its own dataframe: hence one checkpoint per table.
    source = context.data_sources.add_or_update_pandas(DATASOURCE)
    asset = (
        source.get_asset(table)
        if table in source.get_asset_names()
        else source.add_dataframe_asset(table)
    )
    batch = (
        asset.get_batch_definition(table)
        if table in [b.name for b in asset.batch_definitions]
        else asset.add_batch_definition_whole_dataframe(table)
    )
    suite = context.suites.add_or_update(suite)
    name = ex.suite_name(table)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "COMPLETE"},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": df}, expectation_parameters=params)
    out: list[ExpectationValidationResult] = []
    for suite_result in outcome.run_results.values():
        out.extend(suite_result.results)
    # GX returns results grouped by metric; report them in the order the suite lists them.
    order = {e.id: i for i, e in enumerate(suite.expectations)}
    return sorted(out, key=lambda r: order.get(_config(r).id, len(order)))


def _docs_index(context: AbstractDataContext, docs_dir: Path) -> Path:
    for site in context.get_docs_sites_urls():
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            return Path(url[len("file://") :])
    return docs_dir / DOCS_SUBDIR / "index.html"


# ---------------------------------------------------------------------------------------------
# Data preparation and statistics


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The frame GX sees: positional index (so reported indices are row numbers) and pandas 3's
    NaN-backed ``str`` columns as nullable ``string`` (GX 1.24 cannot name the former)."""
    import pandas as pd

    out = df.reset_index(drop=True)
    converted = {
        col: "string"
        for col, dtype in out.dtypes.items()
        if isinstance(dtype, pd.StringDtype) and dtype.na_value is not pd.NA
    }
    return out.astype(converted) if converted else out


def _statistics(ds: Dataset, cfg: ValidationConfig) -> dict[str, int]:
    inter = ds.interactions
    stats = {"rows": len(inter), "item_rows": len(ds.items)}
    stats["users"] = int(inter[USER_ID].nunique()) if USER_ID in inter.columns else 0
    stats["items"] = int(inter[ITEM_ID].nunique()) if ITEM_ID in inter.columns else 0
    if ds.users is not None:
        stats["user_rows"] = len(ds.users)
    if USER_ID in inter.columns:
        # Not an expectation: the split drops such users, but a large count is worth seeing.
        counts = inter[USER_ID].value_counts()
        stats["users_below_min_events"] = int((counts < cfg.min_events_per_user).sum())
    return stats


# ---------------------------------------------------------------------------------------------
# Results -> report rows, failures and the error message


def _config(r: ExpectationValidationResult) -> ExpectationConfiguration:
    """The expectation a result is for (GX sets it on every checkpoint result)."""
    if r.expectation_config is None:
        raise DataError(
            f"data validation: expected GX to name the expectation of each result, found a "
            f"result without one ({str(r)[:200]}); check the great-expectations version"
        )
    return r.expectation_config


def _result_row(table: str, r: ExpectationValidationResult, columns: list[str]) -> dict[str, Any]:
    config = _config(r)
    kwargs = dict(config.kwargs)
    column = kwargs.get("column")
    if column is None and "column_list" in kwargs:
        column = ",".join(kwargs["column_list"])
    result = r.result or {}
    observed: object
    error = _exception_message(r.exception_info)
    if "column" in kwargs and kwargs["column"] not in columns:
        # GX's own errors for a missing column range from clear to "list index out of range".
        observed = f"could not be evaluated: column {kwargs['column']!r} is missing"
    elif error is not None:
        observed = f"could not be evaluated: {error}"
    elif "observed_value" in result:
        observed = result["observed_value"]
    else:
        observed = {
            "unexpected_count": result.get("unexpected_count"),
            "unexpected_percent": result.get("unexpected_percent"),
            "partial_unexpected_list": result.get("partial_unexpected_list", [])[:10],
        }
    return {
        "table": table,
        "expectation": config.type,
        "column": column,
        "success": bool(r.success),
        "observed": _jsonable(observed),
    }


def _exception_message(info: object) -> str | None:
    """GX puts an error either at the top of exception_info or under one key per failed metric."""
    if not isinstance(info, dict):
        return None
    entries = [info, *(v for v in info.values() if isinstance(v, dict))]
    messages = [str(e.get("exception_message")) for e in entries if e.get("raised_exception")]
    return "; ".join(dict.fromkeys(messages)) if messages else None


_TYPE_LIST = "expect_column_values_to_be_in_type_list"
_NOT_NULL = "expect_column_values_to_not_be_null"


def _unreadable(df: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Column -> what the reader could not read there (kept as nulls; see recflow.data.canonical)."""
    from recflow.data.canonical import UNREADABLE_ATTR

    if df is None:
        return {}
    return dict(df.attrs.get(UNREADABLE_ATTR) or {})


def _unreadable_text(info: dict[str, Any], nulls: object) -> str:
    """ "50 values are not numbers, e.g. 'abc', 'five'" (and how many other nulls there are)."""
    count = int(info.get("count", 0))
    examples = ", ".join(repr(str(v)) for v in info.get("examples", []))
    text = f"{count} values are not {info.get('expected', 'readable')}, e.g. {examples}"
    rows = info.get("rows") or []
    if rows:
        text += f" (rows {', '.join(str(r) for r in rows)}{', ...' if count > len(rows) else ''})"
    if isinstance(nulls, int) and nulls > count:
        text += f"; {nulls - count} more are empty"
    return text


# What an expectation wants, for expectations whose kwargs alone do not say it.
_EXPECTED_TEXT = {
    "expect_column_values_to_not_be_null": "no nulls",
    "expect_column_values_to_be_unique": "unique values",
    "expect_compound_columns_to_be_unique": "no two rows with the same values in these columns",
    "expect_column_to_exist": "the column to exist",
}


def _expected(expectation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ("min_value", "max_value", "column_set", "type_list")
    out: dict[str, Any] = {k: kwargs[k] for k in keys if kwargs.get(k) is not None}
    if expectation in _EXPECTED_TEXT:
        out["rule"] = _EXPECTED_TEXT[expectation]
    if "value_set" in kwargs:
        values = list(kwargs["value_set"] or [])
        out["value_set"] = f"one of {len(values)} values, e.g. {values[:5]}"
    return _jsonable(out)


def _observed_text(observed: object, rows: int) -> str:
    if isinstance(observed, dict) and "unexpected_count" in observed:
        return (
            f"{observed['unexpected_count']} of {rows} rows "
            f"({observed['unexpected_percent'] or 0:.3g}%), e.g. {observed['partial_unexpected_list']}"
        )
    return repr(observed)


def _failure(
    row: dict[str, Any], r: ExpectationValidationResult, df: pd.DataFrame, limit: int
) -> dict[str, Any]:
    result = r.result or {}
    indices = list(result.get("unexpected_index_list") or [])[:limit]
    if row["expectation"] == _TYPE_LIST and not indices and row["column"] in df.columns:
        # A wrong dtype fails as a whole (GX checks values one by one only for object columns):
        # every row is a bad row, so show the first ones.
        indices = list(range(min(limit, len(df))))
    sample: list[dict[str, Any]] = []
    if indices:
        positions = [int(i) for i in indices if isinstance(i, int | float)]
        rows = df.iloc[positions].astype(object)
        for pos, record in zip(positions, rows.to_dict("records"), strict=True):
            sample.append({"row": pos, **_jsonable(record)})
    return {
        "table": row["table"],
        "expectation": row["expectation"],
        "column": row["column"],
        "expected": _expected(row["expectation"], dict(_config(r).kwargs)),
        "table_rows": len(df),
        "observed": row["observed"],
        "sample_rows": sample,
    }


def _message(failures: list[dict[str, Any]], index: Path) -> str:
    lines = [f"data validation failed: {len(failures)} expectation(s) not met"]
    for f in failures:
        where = f"{f['table']}.{f['column']}" if f["column"] else f["table"]
        if f.get("unreadable"):
            nulls = (f["observed"] or {}).get("unexpected_count")
            lines.append(
                f"- {where}: {_unreadable_text(f['unreadable'], nulls)} "
                f"({f['expectation']}: the reader kept them as nulls)"
            )
        else:
            found = _observed_text(f["observed"], f["table_rows"])
            lines.append(f"- {where}: {f['expectation']}: expected {f['expected']}, found {found}")
        for s in f["sample_rows"]:
            lines.append(f"    bad row {s}")
    lines.append(
        "Fix the source data, or relax the thresholds in the DAG params (min_users, min_items, "
        "min_interactions, min_rating, max_rating) if they are too strict. "
        f"Data Docs: {index}"
    )
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """Plain Python values for logs and XCom: pandas NA/NaN become None, numpy scalars unwrap."""
    import numpy as np
    import pandas as pd

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if value != value else value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)
