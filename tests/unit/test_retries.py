"""Which failures Airflow retries: transient faults yes, verdicts never (AirflowFailException)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from recflow.config import RetryConfig
from recflow.drift import DriftDetected
from recflow.errors import (
    ConfigError,
    ContractError,
    DeadlineExceeded,
    ModelLoadFailed,
    ModelNotReady,
    PromotionError,
    RecflowError,
    RegistryError,
    ServerUnavailable,
    ValidationFailed,
    VerificationFailed,
)
from recflow.pipeline.retries import fail_fast, retry_args


def _wrapped(error: BaseException) -> BaseException:
    """``error`` as a lower layer raises it: PromotionError wraps what the server said."""
    try:
        raise error
    except RecflowError as cause:
        try:
            raise PromotionError(f"step failed: {cause}") from cause
        except PromotionError as wrapper:
            return wrapper


VERDICTS = [
    ValidationFailed("3 expectations failed"),
    DriftDetected("item popularity drifted", [], "quarantine/x"),
    VerificationFailed("canary answered unlike the exported model"),
    ModelLoadFailed("version 2 failed to load"),
    ContractError("no serving_default"),
    ConfigError("epochs: expected >= 1"),
    _wrapped(VerificationFailed("answers differ")),
]
TRANSIENT = [
    ServerUnavailable("no model server answered"),
    DeadlineExceeded("no answer within the deadline"),
    RegistryError("MLflow at http://mlflow:5000: could not connect"),
    ModelNotReady("not AVAILABLE after 120s"),
    _wrapped(ServerUnavailable("connection refused")),
    _wrapped(DeadlineExceeded("reload deadline")),
]


def _task(error: BaseException):
    @fail_fast
    def task() -> dict:
        raise error

    return task


@pytest.mark.parametrize("error", VERDICTS, ids=lambda e: type(e).__name__)
def test_verdicts_fail_without_retry(error: BaseException) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="not retried") as failed:
        _task(error)()
    assert str(error) in str(failed.value) and failed.value.__cause__ is error


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: f"{type(e).__name__}-{e}"[:40])
def test_transient_faults_propagate_for_airflow_to_retry(error: BaseException) -> None:
    with pytest.raises(type(error)) as raised:
        _task(error)()
    assert raised.value is error


def test_other_exceptions_and_results_pass_through() -> None:
    with pytest.raises(OSError):
        _task(OSError("disk full"))()

    @fail_fast
    def gate(x: int) -> bool:
        """A declined gate returns False: a decision, nothing raised, nothing retried."""
        return x > 1

    assert gate(0) is False and gate.__wrapped__.__doc__  # type: ignore[attr-defined]


def test_retry_args_use_exponential_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    args = retry_args()
    assert args["retries"] == 3
    # Airflow 3 reads a multiplier: True (1.0) would mean no backoff at all.
    assert args["retry_exponential_backoff"] == 2.0
    assert args["retry_delay"] == timedelta(seconds=30)
    assert args["max_retry_delay"] == timedelta(minutes=10)
    monkeypatch.setenv("RECFLOW_TASK_RETRIES", "5")
    assert retry_args(RetryConfig())["retries"] == 5
