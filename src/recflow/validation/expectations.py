"""The expectation suites of the canonical tables (interactions, items, users).

Suites depend only on the configuration; values that change with every run (the catalogue's
item ids, the latest acceptable timestamp) are GX suite parameters filled in by
:func:`suite_parameters`, so the stored suites stay identical between runs.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import TYPE_CHECKING

from recflow.config import ValidationConfig
from recflow.jsontypes import JSONObject
from recflow.schema import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    ITEM_ID,
    RATING,
    TIMESTAMP,
    TITLE,
    USER_ID,
)

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.expectations import Expectation

    from recflow.types import Dataset

INTERACTIONS = "interactions"
ITEMS = "items"
USERS = "users"
TABLES = (INTERACTIONS, ITEMS, USERS)

SUITE_PREFIX = "recflow"

# Suite parameter names (referenced as {"$PARAMETER": name} inside the suites).
PARAM_ITEM_IDS = "catalogue_item_ids"
PARAM_MAX_TIMESTAMP = "max_timestamp"

# Type names as GX 1.24 resolves them for pandas (numpy dtype names, or pandas extension dtype
# class names). pandas 3's NaN-backed `str` dtype has no name GX can match: run.py converts such
# columns to the equivalent nullable `string` dtype before validating. With `object` dtype GX
# checks every value, so an object column holding Python str passes and one holding other
# values reports the offending rows.
STRING_TYPES = ["StringDtype", "object"]
INTEGER_TYPES = ["int64", "int32", "Int64Dtype", "Int32Dtype"]
NUMERIC_TYPES = ["float64", "float32", "Float64Dtype", "Float32Dtype", *INTEGER_TYPES]


def suite_name(table: str) -> str:
    return f"{SUITE_PREFIX}_{table}"


def _gx() -> ModuleType:
    from recflow.validation.run import import_gx

    return import_gx()


def interactions_suite(cfg: ValidationConfig) -> gx.ExpectationSuite:
    gx = _gx()
    e = gx.expectations
    columns = list(INTERACTION_COLUMNS)
    expectations: list[Expectation] = []
    add = expectations.append
    # Extra columns are tolerated: readers may pass through attributes the pipeline ignores.
    add(e.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=False))
    types = {USER_ID: STRING_TYPES, ITEM_ID: STRING_TYPES, RATING: NUMERIC_TYPES}
    types[TIMESTAMP] = INTEGER_TYPES
    for column in columns:
        add(e.ExpectColumnValuesToBeInTypeList(column=column, type_list=types[column]))
    for column in columns:
        add(e.ExpectColumnValuesToNotBeNull(column=column))
    add(
        e.ExpectColumnValuesToBeBetween(
            column=RATING, min_value=cfg.min_rating, max_value=cfg.max_rating
        )
    )
    add(
        e.ExpectColumnValuesToBeBetween(
            column=TIMESTAMP,
            min_value=cfg.earliest_timestamp,
            max_value={"$PARAMETER": PARAM_MAX_TIMESTAMP},
        )
    )
    add(e.ExpectCompoundColumnsToBeUnique(column_list=[USER_ID, ITEM_ID, TIMESTAMP]))
    add(e.ExpectColumnValuesToBeInSet(column=ITEM_ID, value_set={"$PARAMETER": PARAM_ITEM_IDS}))
    add(e.ExpectColumnUniqueValueCountToBeBetween(column=USER_ID, min_value=cfg.min_users))
    add(e.ExpectColumnUniqueValueCountToBeBetween(column=ITEM_ID, min_value=cfg.min_items))
    add(e.ExpectTableRowCountToBeBetween(min_value=cfg.min_interactions))
    return gx.ExpectationSuite(name=suite_name(INTERACTIONS), expectations=expectations)


def items_suite() -> gx.ExpectationSuite:
    gx = _gx()
    e = gx.expectations
    expectations: list[Expectation] = []
    add = expectations.append
    add(e.ExpectTableColumnsToMatchSet(column_set=list(ITEM_COLUMNS), exact_match=False))
    add(e.ExpectColumnValuesToNotBeNull(column=ITEM_ID))
    add(e.ExpectColumnValuesToBeUnique(column=ITEM_ID))
    add(e.ExpectColumnValuesToNotBeNull(column=TITLE))
    return gx.ExpectationSuite(name=suite_name(ITEMS), expectations=expectations)


def users_suite() -> gx.ExpectationSuite:
    gx = _gx()
    e = gx.expectations
    expectations: list[Expectation] = []
    add = expectations.append
    add(e.ExpectColumnToExist(column=USER_ID))
    add(e.ExpectColumnValuesToNotBeNull(column=USER_ID))
    add(e.ExpectColumnValuesToBeUnique(column=USER_ID))
    return gx.ExpectationSuite(name=suite_name(USERS), expectations=expectations)


def build_suites(cfg: ValidationConfig, *, with_users: bool) -> dict[str, gx.ExpectationSuite]:
    """One suite per table present, keyed by table name."""
    suites = {INTERACTIONS: interactions_suite(cfg), ITEMS: items_suite()}
    if with_users:
        suites[USERS] = users_suite()
    return suites


def suite_parameters(ds: Dataset, cfg: ValidationConfig, now: int | None = None) -> JSONObject:
    """Run-time values of the suite parameters."""
    item_ids: list[str] = []
    if ITEM_ID in ds.items.columns:
        # Nulls are reported by the items suite; here they must not make a null id "known".
        item_ids = [str(v) for v in ds.items[ITEM_ID].dropna().unique()]
    current = int(time.time()) if now is None else int(now)
    return {PARAM_ITEM_IDS: item_ids, PARAM_MAX_TIMESTAMP: current + cfg.max_future_seconds}
