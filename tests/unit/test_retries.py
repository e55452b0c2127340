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
    GateDeclined,
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
from recflow.pipeline.stages import raise_if_declined


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
    GateDeclined("gate: gate DECLINED the candidate: ndcg@10 below the floor"),
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
    def stage(x: int) -> bool:
        """A docstring kept by the wrapper."""
        return x > 1

    assert stage(0) is False and stage.__wrapped__.__doc__  # type: ignore[attr-defined]


def test_a_gate_decline_fails_the_task_with_its_reasons_and_is_never_retried() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    @fail_fast
    def gate(record: dict) -> dict:
        return raise_if_declined(record, step="gate")

    passed = {"passed": True, "reasons": ["lift 2.1x over popularity"], "checks": [1, 2]}
    assert gate(passed) == {"passed": True, "reasons": ["lift 2.1x over popularity"]}
    declined = {"passed": False, "reasons": ["ndcg@10 0.01 < floor 0.02", "no lift"]}
    with pytest.raises(AirflowFailException, match="not retried") as failed:
        gate(declined)
    message = str(failed.value)
    assert message.startswith("gate: gate DECLINED the candidate: ndcg@10 0.01 < floor 0.02; no")
    assert "keeps serving" in message and "GateDeclined" in message
    cause = failed.value.__cause__
    assert isinstance(cause, GateDeclined) and cause.reasons == declined["reasons"]


def test_retry_args_use_exponential_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    args = retry_args()
    assert args["retries"] == 3
    # Airflow 3 reads a multiplier: True (1.0) would mean no backoff at all.
    assert args["retry_exponential_backoff"] == 2.0
    assert args["retry_delay"] == timedelta(seconds=30)
    assert args["max_retry_delay"] == timedelta(minutes=10)
    monkeypatch.setenv("RECFLOW_TASK_RETRIES", "5")
    assert retry_args(RetryConfig())["retries"] == 5
