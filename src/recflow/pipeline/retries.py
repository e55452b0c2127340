"""How pipeline tasks fail: transient faults are retried, verdicts fail the task at once.

Tasks that talk to MLflow or the model server get Airflow retries with exponential backoff
(:func:`retry_args`, from ``config.RetryConfig``): a registry or server that was down for a
moment, a reload that outlived its deadline on a cold GPU. Every such task is idempotent (it
finds what an earlier try did: the tracking run by its tags, an installed version folder, a
config already in force), so a retry ends where a clean run would.

A verdict is not worth a retry: data that failed validation or drift checks, a model that
fails its contract, its load or its canary check, a bad parameter. :func:`fail_fast` turns
those (every ``RecflowError`` that ``recflow.errors.is_transient`` does not call transient)
into ``AirflowFailException``, which Airflow never retries. It is applied at the task
boundary, in the DAG files, so nothing below imports Airflow. A gate that *declines* a
candidate is a verdict too: the gate task records the decision, then raises ``GateDeclined``
(``pipeline.stages.raise_if_declined``), so the promotion steps never run and the run fails
with the gate's reasons as its message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import ParamSpec, TypeVar

from recflow.config import RetryConfig
from recflow.errors import RecflowError, is_transient

P = ParamSpec("P")
R = TypeVar("R")


def retry_args(cfg: RetryConfig | None = None) -> dict[str, object]:
    """Operator arguments (DAG ``default_args`` or ``@task(**...)``) for transient faults."""
    cfg = cfg or RetryConfig()
    return {
        "retries": cfg.retries,
        "retry_delay": timedelta(seconds=cfg.retry_delay_seconds),
        # A multiplier since Airflow 3.1 (True would mean 1.0: no backoff at all).
        "retry_exponential_backoff": float(cfg.backoff),
        "max_retry_delay": timedelta(seconds=cfg.max_retry_delay_seconds),
    }


def final_error(error: RecflowError) -> Exception:
    """The exception a task raises for ``error``: itself when transient (Airflow retries
    it), else ``AirflowFailException`` with the same message (never retried)."""
    if is_transient(error):
        return error
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(
        f"{error} [{type(error).__name__}: a verdict, not a transient fault; not retried]"
    )


def fail_fast(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a task body: verdicts become ``AirflowFailException``, the rest propagates."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except RecflowError as error:
            final = final_error(error)
            if final is error:
                raise
            raise final from error

    wrapper.recflow_fail_fast = True  # type: ignore[attr-defined]  # checked by tests/dags
    return wrapper
