"""Bounds on what one request may ask of the local model server.

* **Rows**: with ``--enable_batching`` a request may carry at most the batching parameters'
  ``max_batch_size`` rows (TF Serving refuses larger ones with INVALID_ARGUMENT "Task size N is
  larger than maximum input batch size M"; its default is 1000 when the file leaves it unset).
  Without batching TF Serving has no such bound; here ``--max_request_rows`` (default 64, the
  shipped CPU batching file's max_batch_size) applies. Memory per row is the model's: on the
  MovieLens-100K-size ranking MLP (1,682 items) one row costs ~1.3-1.6 MB at peak, so 64 rows
  raised the server's RSS by 82 MB and 1,000 rows by 1.6 GB (bench/soak.py, this machine).
* **Bytes**: gRPC's receive limit, 4 MiB by default (gRPC's own default; TF Serving lifts it to
  2 GiB). ``--grpc_channel_arguments`` takes TF Serving's form
  (``grpc.max_receive_message_length=8388608,grpc.max_connection_age_ms=60000``); an unbounded
  receive limit (``-1`` or 0) is refused.
* **Elements**: an input may not declare more elements than the receive limit has bytes. A
  TensorProto may state a large shape with a single value that TensorFlow then repeats
  (``float_val: 0`` with shape [1000000000] is a 4 GB tensor in 10 bytes); every other encoding
  costs at least one byte per element, so this refuses only that amplification.
* **Shapes**: an input's rank and fixed dimensions must match its signature; the message names
  the input and both shapes (before TensorFlow sees it).

Together these bound the memory one request can make the server allocate: at most
``max rows`` rows through the model (the stated bound, measured by ``make bench-soak``: at most
100 MB for one request on the MovieLens-100K-size model with the default 64 rows), and at most
``8 x receive limit`` bytes per decoded numeric input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from recflow.errors import ConfigError, LimitExceeded

if TYPE_CHECKING:
    from tensorflow.core.framework.tensor_pb2 import TensorProto
    from tensorflow.core.protobuf.meta_graph_pb2 import TensorInfo

GRPC_DEFAULT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_REQUEST_ROWS = 64  # as serving/batching_parameters.txt's max_batch_size
MAX_RECEIVE = "grpc.max_receive_message_length"
INT32_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    max_rows: int = DEFAULT_MAX_REQUEST_ROWS
    rows_from: str = "--max_request_rows"  # what set max_rows, named in refusals
    max_receive_bytes: int = GRPC_DEFAULT_MAX_RECEIVE_BYTES

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ConfigError(f"{self.rows_from}: expected a row count >= 1, found {self.max_rows}")

    @property
    def max_elements(self) -> int:
        return self.max_receive_bytes


def parse_grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """TF Serving's ``--grpc_channel_arguments``: ``key=value`` pairs separated by commas;
    a value that reads as a 32-bit integer is passed as one (as server.cc does)."""
    out: list[tuple[str, int | str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--grpc_channel_arguments: expected key=value pairs separated by commas "
                f"(e.g. {MAX_RECEIVE}=8388608), found {item!r}"
            )
        key, value = key.strip(), value.strip()
        try:
            number = int(value)
        except ValueError:
            out.append((key, value))
            continue
        out.append((key, number) if -(2**31) <= number <= INT32_MAX else (key, value))
    return out


def server_options(
    arguments: Sequence[tuple[str, int | str]],
) -> tuple[list[tuple[str, int | str]], int]:
    """gRPC server options and the receive limit in force (gRPC's 4 MiB unless given)."""
    options: dict[str, int | str] = {MAX_RECEIVE: GRPC_DEFAULT_MAX_RECEIVE_BYTES}
    options.update(dict(arguments))
    receive = options[MAX_RECEIVE]
    if not isinstance(receive, int) or receive <= 0:
        raise ConfigError(
            f"--grpc_channel_arguments: {MAX_RECEIVE} must be a positive byte count (at most "
            f"{INT32_MAX}), found {receive!r}; an unbounded receive limit lets one request "
            "exhaust the server's memory"
        )
    return list(options.items()), receive


def shape_text(dims: Sequence[int] | None) -> str:
    return "<unknown rank>" if dims is None else "[" + ", ".join(str(d) for d in dims) + "]"


def check_input(
    alias: str, proto: TensorProto, info: TensorInfo, sig_name: str, limits: RequestLimits | None
) -> int | None:
    """Check one request TensorProto against its signature TensorInfo and the limits, before
    decoding it. Returns the rows along an open batch dimension (None if there is none)."""
    received = [int(d.size) for d in proto.tensor_shape.dim]
    where = f"input {alias!r} of signature {sig_name!r}"
    if any(d < 0 for d in received):
        raise LimitExceeded(
            "INVALID_ARGUMENT",
            f"{where}: dimensions must be >= 0, received shape {shape_text(received)}",
        )
    expected = (
        None if info.tensor_shape.unknown_rank else [int(d.size) for d in info.tensor_shape.dim]
    )
    if expected is not None and (
        len(expected) != len(received)
        or any(e not in (-1, r) for e, r in zip(expected, received, strict=True))
    ):
        raise LimitExceeded(
            "INVALID_ARGUMENT",
            f"{where}: expected shape {shape_text(expected)} (-1: any size), received shape "
            f"{shape_text(received)}",
        )
    rows = received[0] if received and (expected is None or expected[0] == -1) else None
    if limits is None:
        return rows
    if rows is not None and rows > limits.max_rows:
        raise LimitExceeded(
            "INVALID_ARGUMENT",
            f"Task size {rows} is larger than maximum input batch size {limits.max_rows} "
            f"({where}; the limit is {limits.rows_from}): split the request",
        )
    elements = 1
    for d in received:
        elements *= d
    if elements > limits.max_elements:
        raise LimitExceeded(
            "RESOURCE_EXHAUSTED",
            f"{where}: shape {shape_text(received)} declares {elements} elements, more than "
            f"the {limits.max_elements} a request may carry ({MAX_RECEIVE} = "
            f"{limits.max_receive_bytes} bytes)",
        )
    return rows
