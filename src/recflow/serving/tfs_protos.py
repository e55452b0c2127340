"""TF Serving's config messages missing from the tensorflow-serving-api wheel, and the readers
of TF Serving's text input files built on them.

The wheel ships ``ModelServerConfig`` (``tensorflow_serving.config.model_server_config_pb2``)
but neither ``BatchingParameters`` nor ``MonitoringConfig``. They are declared here with the
same package, message names, field names, numbers, types and labels as TF Serving's sources at
release **2.20.0** (tag ``2.20.0`` of github.com/tensorflow/serving):

* ``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``: ``BatchingParameters``
  only (the file's other messages need TensorFlow's ``ConfigProto``; the batching parameters
  file holds a ``BatchingParameters`` alone, read by ``ParseProtoTextFile<BatchingParameters>``
  in ``model_servers/server.cc``);
* ``tensorflow_serving/config/monitoring_config.proto``: ``PrometheusConfig`` and
  ``MonitoringConfig``, whole.

They live in a private descriptor pool, so they can never clash with a later wheel that ships
them. TF Serving reads these files with protobuf's ``TextFormat::ParseFromString`` and stops at
start with ``Invalid protobuf file`` if that fails; ``read_text_proto`` applies the same strict
parser (``google.protobuf.text_format``) and names the file and the parse problem instead.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from recflow.errors import ConfigError

if TYPE_CHECKING:
    from google.protobuf.descriptor_pb2 import FileDescriptorProto
    from google.protobuf.descriptor_pool import DescriptorPool
    from google.protobuf.message import Message

M = TypeVar("M", bound="Message")

PACKAGE = "tensorflow.serving"
SESSION_BUNDLE_CONFIG_PROTO = "tensorflow_serving/servables/tensorflow/session_bundle_config.proto"
MONITORING_CONFIG_PROTO = "tensorflow_serving/config/monitoring_config.proto"
MIRRORED_RELEASE = "2.20.0"

# SharedBatchScheduler::QueueOptions::input_batch_size_limit, TF Serving's max_batch_size when
# the batching parameters leave it unset (tensorflow/core/kernels/batching_util/
# shared_batch_scheduler.h).
DEFAULT_MAX_BATCH_SIZE = 1000

# (name, number, type, label, type_name) as in session_bundle_config.proto at 2.20.0.
_T = "google.protobuf"
BATCHING_PARAMETERS_FIELDS: tuple[tuple[str, int, str, str, str], ...] = (
    ("max_batch_size", 1, "message", "optional", f".{_T}.Int64Value"),
    ("batch_timeout_micros", 2, "message", "optional", f".{_T}.Int64Value"),
    ("max_enqueued_batches", 3, "message", "optional", f".{_T}.Int64Value"),
    ("num_batch_threads", 4, "message", "optional", f".{_T}.Int64Value"),
    ("thread_pool_name", 5, "message", "optional", f".{_T}.StringValue"),
    ("allowed_batch_sizes", 6, "int64", "repeated", ""),
    ("pad_variable_length_inputs", 7, "bool", "optional", ""),
    ("enable_large_batch_splitting", 8, "message", "optional", f".{_T}.BoolValue"),
    ("max_execution_batch_size", 9, "message", "optional", f".{_T}.Int64Value"),
)
PROMETHEUS_CONFIG_FIELDS: tuple[tuple[str, int, str, str, str], ...] = (
    ("enable", 1, "bool", "optional", ""),
    ("path", 2, "string", "optional", ""),
)
MONITORING_CONFIG_FIELDS: tuple[tuple[str, int, str, str, str], ...] = (
    ("prometheus_config", 1, "message", "optional", f".{PACKAGE}.PrometheusConfig"),
)


def _file(
    name: str, messages: dict[str, tuple[tuple[str, int, str, str, str], ...]]
) -> FileDescriptorProto:
    from google.protobuf import descriptor_pb2

    fdp = descriptor_pb2.FileDescriptorProto(name=name, package=PACKAGE, syntax="proto3")
    uses_wrappers = False
    for message_name, fields in messages.items():
        message = fdp.message_type.add(name=message_name)
        for fname, number, ftype, label, type_name in fields:
            field = message.field.add(
                name=fname,
                number=number,
                type=getattr(descriptor_pb2.FieldDescriptorProto, f"TYPE_{ftype.upper()}"),
                label=getattr(descriptor_pb2.FieldDescriptorProto, f"LABEL_{label.upper()}"),
                json_name=_json_name(fname),
            )
            if type_name:
                field.type_name = type_name
                uses_wrappers |= type_name.startswith(f".{_T}.")
            if label == "repeated" and ftype not in ("message", "string", "bytes"):
                field.options.packed = True  # proto3's default for repeated scalars
    if uses_wrappers:
        fdp.dependency.append("google/protobuf/wrappers.proto")
    return fdp


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@functools.cache
def _pool() -> DescriptorPool:
    from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    pool.Add(_file(SESSION_BUNDLE_CONFIG_PROTO, {"BatchingParameters": BATCHING_PARAMETERS_FIELDS}))
    pool.Add(
        _file(
            MONITORING_CONFIG_PROTO,
            {
                "PrometheusConfig": PROMETHEUS_CONFIG_FIELDS,
                "MonitoringConfig": MONITORING_CONFIG_FIELDS,
            },
        )
    )
    return pool


def message_class(name: str) -> type[Message]:
    """The message class of ``tensorflow.serving.<name>`` declared here."""
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"{PACKAGE}.{name}"))


def BatchingParameters(**fields: object) -> Message:  # noqa: N802 (reads like the proto's own class)
    return message_class("BatchingParameters")(**fields)


def MonitoringConfig(**fields: object) -> Message:  # noqa: N802
    return message_class("MonitoringConfig")(**fields)


def parse_text_proto(text: str, message: M, *, source: str, example: str) -> M:
    """Strict text-format parse into ``message``; ConfigError names the source and the problem."""
    from google.protobuf import text_format

    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(
            f"{source}: not a valid text-format {message.DESCRIPTOR.full_name} ({exc}); TF "
            f"Serving {MIRRORED_RELEASE} refuses it too ('Invalid protobuf file'). Expected "
            f"lines like {example}"
        ) from None
    return message


def read_text_proto(path: str | Path, message: M, *, example: str) -> M:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from None
    return parse_text_proto(text, message, source=str(path), example=example)


BATCHING_EXAMPLE = "'max_batch_size { value: 128 }' and 'allowed_batch_sizes: 32'"
MONITORING_EXAMPLE = "'prometheus_config { enable: true path: \"/monitoring/prometheus/metrics\" }'"


def parse_batching_text(text: str, *, source: str = "<text>") -> Message:
    """A checked ``BatchingParameters`` (syntax, then TF Serving's documented rules)."""
    params = parse_text_proto(text, BatchingParameters(), source=source, example=BATCHING_EXAMPLE)
    check_batching_parameters(params, source=source)
    return params


def read_batching_parameters(path: str | Path) -> Message:
    params = read_text_proto(path, BatchingParameters(), example=BATCHING_EXAMPLE)
    check_batching_parameters(params, source=str(path))
    return params


def read_monitoring_config(path: str | Path) -> Message:
    return read_text_proto(path, MonitoringConfig(), example=MONITORING_EXAMPLE)


def effective_max_batch_size(params: Message) -> int:
    """``max_batch_size`` as TF Serving applies it (its default when unset)."""
    if params.HasField("max_batch_size"):
        return int(params.max_batch_size.value)
    return DEFAULT_MAX_BATCH_SIZE


def check_batching_parameters(params: Message, *, source: str) -> None:
    """TF Serving's rules on BatchingParameters, with its own messages where it has them.

    From session_bundle_config.proto's comments and the checks in bundle_factory_util.cc
    (WrapSessionForBatching) and batching_session.cc (CreateBasicBatchingSession) at 2.20.0:
    ``allowed_batch_sizes`` increases strictly; its last entry equals ``max_batch_size``, or,
    with ``enable_large_batch_splitting``, is at most ``max_batch_size`` and equals
    ``max_execution_batch_size``; ``num_batch_threads`` >= 1. TF Serving checks some of these
    only when a model loads (the version then fails to load); here they stop the server at start.
    """
    problems = []
    for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
        if params.HasField(name) and getattr(params, name).value < 1:
            problems.append(f"{name} must be >= 1, found {getattr(params, name).value}")
    if params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value < 0:
        problems.append(
            f"batch_timeout_micros must be >= 0, found {params.batch_timeout_micros.value}"
        )
    max_size = effective_max_batch_size(params)
    sizes = list(params.allowed_batch_sizes)
    splitting = params.HasField("enable_large_batch_splitting") and bool(
        params.enable_large_batch_splitting.value
    )
    if sizes:
        if any(s < 1 for s in sizes):
            problems.append(f"allowed_batch_sizes must be >= 1, found {sizes}")
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
            problems.append(
                f"allowed_batch_sizes entries must be monotonically increasing, found {sizes}"
            )
        if splitting:
            execution = (
                int(params.max_execution_batch_size.value)
                if params.HasField("max_execution_batch_size")
                else max_size
            )
            if sizes[-1] > max_size:
                problems.append(
                    "Last entry in allowed_batch_sizes must be less than or equal to "
                    f"max_batch_size; last entry was {sizes[-1]}; expected {max_size}"
                )
            if sizes[-1] != execution:
                problems.append(
                    "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
                    f"last entry was {sizes[-1]}; expected {execution}"
                )
        elif sizes[-1] != max_size:
            problems.append(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{sizes[-1]}; expected {max_size}"
            )
    if problems:
        raise ConfigError(
            f"{source}: batching parameters TF Serving refuses: {'; '.join(problems)}"
        )


def prometheus_path(config: Message) -> str | None:
    """The metrics path if ``prometheus_config.enable``; TF Serving's default path when empty."""
    if not config.HasField("prometheus_config") or not config.prometheus_config.enable:
        return None
    return str(config.prometheus_config.path or "/monitoring/prometheus/metrics")
