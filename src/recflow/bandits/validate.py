"""Great Expectations checks of logged bandit feedback, before any estimator sees it.

Columns checked (one row per logged slot): ``action_id`` in the catalogue, ``position`` in
0..len_list-1, ``reward`` present (and 0/1 when ``binary_reward``), ``pscore`` in (0, 1] (a
zero or missing propensity makes importance weights infinite or undefined), and
``context_ok`` (every context value finite). A failure raises ``ValidationFailed`` listing
each failed expectation with a few offending rows, like ``recflow.validation`` does for
interactions. GX runs in an ephemeral context unless ``docs_dir`` asks for Data Docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np

from recflow.bandits.feedback import LoggedFeedback
from recflow.errors import ValidationFailed
from recflow.jsontypes import JSONObject

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import Expectation

SUITE = "recflow_bandit_feedback"
COLUMNS = ("action_id", "position", "reward", "pscore", "context_ok")


def feedback_frame(feedback: LoggedFeedback) -> pd.DataFrame:
    """The validated view of loaded feedback (context reduced to one finiteness flag)."""
    import pandas as pd

    ids = np.asarray(feedback.action_ids, dtype=object)
    return pd.DataFrame(
        {
            "action_id": ids[feedback.action],
            "position": feedback.position.astype(np.int64),
            "reward": feedback.reward.astype(np.float64),
            "pscore": feedback.pscore.astype(np.float64),
            "context_ok": np.isfinite(feedback.context).all(axis=1),
        }
    )


def _suite(
    gx: ModuleType, catalogue: Sequence[str], len_list: int, binary_reward: bool, min_rounds: int
) -> ExpectationSuite:
    e = gx.expectations
    exps: list[Expectation] = [
        e.ExpectTableColumnsToMatchSet(column_set=list(COLUMNS), exact_match=False),
        e.ExpectTableRowCountToBeBetween(min_value=min_rounds),
        e.ExpectColumnValuesToNotBeNull(column="pscore"),
        e.ExpectColumnValuesToBeBetween(
            column="pscore", min_value=0.0, max_value=1.0, strict_min=True
        ),
        e.ExpectColumnValuesToNotBeNull(column="action_id"),
        e.ExpectColumnValuesToBeInSet(column="action_id", value_set=[str(a) for a in catalogue]),
        e.ExpectColumnValuesToNotBeNull(column="position"),
        e.ExpectColumnValuesToBeBetween(column="position", min_value=0, max_value=len_list - 1),
        e.ExpectColumnValuesToNotBeNull(column="reward"),
        e.ExpectColumnValuesToBeInSet(column="context_ok", value_set=[True]),
    ]
    if binary_reward:
        exps.append(e.ExpectColumnValuesToBeInSet(column="reward", value_set=[0.0, 1.0]))
    return gx.ExpectationSuite(name=SUITE, expectations=exps)


class FrameOptions(TypedDict, total=False):
    """The keyword arguments of :func:`validate_frame` after the frame and its catalogue."""

    binary_reward: bool
    min_rounds: int
    docs_dir: Path | None
    sample_rows: int


def validate_frame(
    frame: pd.DataFrame,
    catalogue: Sequence[str],
    len_list: int,
    *,
    binary_reward: bool = True,
    min_rounds: int = 1,
    docs_dir: Path | None = None,
    sample_rows: int = 5,
) -> JSONObject:
    """Run the suite on ``frame``; return a JSON-able report or raise ValidationFailed."""
    from recflow.validation.run import import_gx

    gx = import_gx()
    if docs_dir is not None:
        Path(docs_dir).mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    else:
        context = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    frame = frame.reset_index(drop=True)
    source = context.data_sources.add_or_update_pandas("recflow_bandits")
    asset = (
        source.get_asset("feedback")
        if "feedback" in source.get_asset_names()
        else source.add_dataframe_asset("feedback")
    )
    names = [b.name for b in asset.batch_definitions]
    batch_def = (
        asset.get_batch_definition("all")
        if "all" in names
        else asset.add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add_or_update(_suite(gx, catalogue, len_list, binary_reward, min_rounds))
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=SUITE, data=batch_def, suite=suite)
    )
    actions: list[UpdateDataDocsAction] = []
    if docs_dir is not None:
        from great_expectations.checkpoint import UpdateDataDocsAction

        actions.append(UpdateDataDocsAction(name="update_data_docs"))
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=SUITE,
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    results = [r for run in outcome.run_results.values() for r in run.results]
    failures = [_failure(r, frame, sample_rows) for r in results if not r.success]
    report: JSONObject = {
        "success": not failures,
        "rounds": len(frame),
        "expectations_evaluated": len(results),
        "expectations_failed": len(failures),
        "failures": failures,
    }
    if failures:
        lines = [f"logged bandit feedback failed {len(failures)} expectation(s):"]
        for f in failures:
            lines.append(
                f"- {f['column'] or 'table'}: {f['expectation']}: expected {f['expected']}, "
                f"found {f['observed']}; e.g. rows {f['sample_rows']}"
            )
        lines.append(
            "Fix the logger that wrote these rounds (a propensity must be the logging policy's "
            "probability of the shown action, > 0) or drop the bad rounds before estimating."
        )
        raise ValidationFailed("\n".join(lines), failures=failures)
    return report


def validate_feedback(feedback: LoggedFeedback, **kwargs: Unpack[FrameOptions]) -> JSONObject:
    """Validate loaded feedback against its own catalogue and number of positions."""
    return validate_frame(
        feedback_frame(feedback), feedback.action_ids, feedback.len_list, **kwargs
    )


def _failure(r: Any, frame: pd.DataFrame, limit: int) -> JSONObject:
    kwargs = dict(r.expectation_config.kwargs)
    result = r.result or {}
    column = kwargs.get("column")
    expected = {
        k: kwargs[k] for k in ("min_value", "max_value", "strict_min", "column_set") if k in kwargs
    }
    if "value_set" in kwargs:
        values = list(kwargs["value_set"])
        expected["value_set"] = f"one of {len(values)} values, e.g. {values[:5]}"
    if r.expectation_config.type.endswith("not_be_null"):
        expected["rule"] = "no nulls"
    if "observed_value" in result:
        observed: Any = _plain(result["observed_value"])
    else:
        observed = {
            "unexpected_count": result.get("unexpected_count"),
            "partial_unexpected_list": _plain(
                list(result.get("partial_unexpected_list") or [])[:10]
            ),
        }
    indices = [int(i) for i in list(result.get("unexpected_index_list") or [])[:limit]]
    rows = [{"row": i, **_plain(frame.iloc[i].to_dict())} for i in indices]
    return {
        "expectation": r.expectation_config.type,
        "column": column,
        "expected": expected,
        "observed": observed,
        "sample_rows": rows,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
