"""The project's exception hierarchy.

Every error the platform raises on purpose derives from :class:`RecflowError`, so callers
(Airflow tasks, the CLI, tests) can catch one type. Messages say what was expected, what was
found, and what to do next.

    RecflowError
    ├── ConfigError              bad DAG params / configuration values
    ├── DataError
    │   ├── DataSourceError      input files missing, unreadable, wrong format or mapping
    │   └── ValidationFailed     data failed its expectations (carries the details)
    ├── ContractError            a SavedModel does not meet the serving contract
    ├── TrainingError            training could not produce a usable model
    ├── RegistryError            the model registry (MLflow) refused or is unreachable
    ├── ServingError
    │   ├── ServerUnavailable    no model server answered at the address (transient)
    │   ├── DeadlineExceeded     the server is up but did not answer in time (transient)
    │   ├── ModelNotFound        unknown model name, version or label (gRPC NOT_FOUND)
    │   ├── InvalidRequest       the server rejected the inputs (gRPC INVALID_ARGUMENT)
    │   ├── ModelNotReady        a version did not become AVAILABLE in time (transient)
    │   │   └── ModelLoadFailed  the server tried and failed to load it (a verdict)
    │   ├── VerificationFailed   the served answers differ from the exported model's
    │   └── ServableError        the model server refuses a request (server side; carries the
    │       │                    gRPC status code name TF Serving would answer)
    │       ├── QueueFull        the batching queue is full (UNAVAILABLE: retry later)
    │       └── LimitExceeded    the request is over a bound (rows, elements, message size)
    ├── PromotionError           a promotion step could not complete; serving is unchanged
    └── GateDeclined             the gate declined the candidate (a recorded decision)

The gate's decision itself is a ``recflow.gate.GateDecision``; a pipeline task that recorded
a decline raises ``GateDeclined`` so that the promotion steps after it never run.

Transient faults (:func:`is_transient`: a server or registry that did not answer, a deadline,
a load that did not finish in time) are worth retrying; every other error is a verdict on
the data, the model or the request, and retrying it would only repeat it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class RecflowError(Exception):
    """Base class of every error raised on purpose by recflow."""


class ConfigError(RecflowError):
    """A configuration value or DAG param is invalid."""


class DataError(RecflowError):
    """Input data cannot be used."""


class DataSourceError(DataError):
    """Input files are missing, unreadable, or not in the expected format."""


class ValidationFailed(DataError):
    """Data failed one or more expectations.

    ``failures`` holds one mapping per failed expectation with at least the keys
    ``expectation`` (its type), ``column`` (or None), ``observed`` (what was found) and
    ``sample_rows`` (a few offending rows as dicts, possibly empty).
    """

    def __init__(
        self,
        message: str,
        failures: Sequence[Mapping[str, object]] = (),
        data_docs: str | None = None,
    ) -> None:
        super().__init__(message)
        self.failures = list(failures)
        self.data_docs = data_docs


class ContractError(RecflowError):
    """A SavedModel does not meet the serving contract."""


class TrainingError(RecflowError):
    """Training could not produce a usable model."""


class RegistryError(RecflowError):
    """The model registry refused a request or could not be reached."""


class ServingError(RecflowError):
    """A model server request failed."""


class ServerUnavailable(ServingError):
    """No model server answered at the configured address."""


class DeadlineExceeded(ServingError):
    """The model server is up but did not answer within the call's deadline."""


class ModelNotFound(ServingError):
    """The server does not know the model, version or label asked for."""


class InvalidRequest(ServingError):
    """The server rejected the request's inputs."""


class ModelNotReady(ServingError):
    """A model version did not become AVAILABLE within the timeout."""


class ModelLoadFailed(ModelNotReady):
    """The server tried to load a version and failed (state END with an error)."""


class VerificationFailed(ServingError):
    """Answers from the served model differ from the exported model's answers."""


class ServableError(ServingError):
    """A request the model server refuses, raised inside the server (``recflow.serving.server``).

    ``code`` is the ``grpc.StatusCode`` member name the server answers with (for example
    ``"NOT_FOUND"``); ``message`` is the text sent as the status details.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class QueueFull(ServableError):
    """More rows wait in the batching queue than ``max_enqueued_batches * max_batch_size``
    (``recflow.serving.async_batcher``); answered UNAVAILABLE, as TF Serving does: retry later."""

    def __init__(self, message: str) -> None:
        super().__init__("UNAVAILABLE", message)


class LimitExceeded(ServableError):
    """A request over a bound (``recflow.serving.limits``): ``message`` names the bound."""


class PromotionError(RecflowError):
    """A promotion step failed; what is serving was left unchanged."""


class GateDeclined(RecflowError):
    """The gate declined the candidate. Raised after the decision was recorded (MLflow tags
    and ``gate/decision.json``, the run's ``gate.json``); what serves keeps serving. A verdict:
    never retried. ``reasons`` are the gate's, one sentence each."""

    def __init__(self, message: str, *, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reasons = list(reasons)


TRANSIENT: tuple[type[RecflowError], ...] = (
    ServerUnavailable,
    DeadlineExceeded,
    RegistryError,  # MLflow unreachable or its database busy; a refusal only repeats
)


def is_transient(error: BaseException) -> bool:
    """Whether retrying could succeed: the error, or what caused it, is a transient fault.

    ``ModelNotReady`` (not AVAILABLE in time: a cold GPU is warm the second time) is
    transient, ``ModelLoadFailed`` is not. A wrapper such as ``PromotionError`` is transient
    when its cause is.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModelLoadFailed):
            return False
        if isinstance(current, TRANSIENT + (ModelNotReady,)):
            return True
        current = current.__cause__
    return False
