"""What the model server's answers become: recommendation rows, version-status rows, signature
metadata, and the recflow error (with what to do) for a failed call. No network here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import grpc
import numpy as np

from recflow import contract
from recflow.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ModelNotFound,
    ServerUnavailable,
    ServingError,
)
from recflow.jsontypes import JSONObject

if TYPE_CHECKING:
    from tensorflow.core.protobuf.meta_graph_pb2 import TensorInfo
    from tensorflow_serving.apis.get_model_metadata_pb2 import SignatureDefMap

STATE_NAMES = {
    0: "UNKNOWN",
    10: "START",
    20: "LOADING",
    30: "AVAILABLE",
    40: "UNLOADING",
    50: "END",
}


@dataclass(frozen=True)
class Recommendation:
    user_id: str  # as the caller passed it
    items: list[tuple[str, str, float]]  # (item_id, title, score), best first
    model_version: int
    # why each item is recommended, aligned with ``items`` (contract 1.1; [] for older models)
    reasons: list[str] = field(default_factory=list)
    # the id the model saw when ``recflow.serving.recommender.RecommenderClient`` hashed it
    pseudonym: str = ""


class VersionStatus(NamedTuple):
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error: str | None


def start_hint(address: str) -> str:
    port = address.rsplit(":", 1)[-1]
    return (
        f"start one with `make serve` or `recflow-model-server --model_config_file "
        f"<models.config> --port {port}`, or point --server at the right host:port"
    )


def map_rpc_error(
    exc: grpc.RpcError, *, address: str, what: str, connected: bool = True
) -> ServingError:
    """Turn a gRPC failure into the recflow error a caller can act on.

    ``connected`` says whether the channel ever reached the server; a deadline that expires
    before that means nobody is listening.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    if code == grpc.StatusCode.UNAVAILABLE or (
        code == grpc.StatusCode.DEADLINE_EXCEEDED and not connected
    ):
        return ServerUnavailable(
            f"{what}: no model server answered at {address} ({details}); {start_hint(address)}"
        )
    # TF Serving answers an unknown label with INVALID_ARGUMENT; to a caller it is "not found".
    if code == grpc.StatusCode.NOT_FOUND or (
        code == grpc.StatusCode.INVALID_ARGUMENT
        and details.startswith("Unrecognized servable version label")
    ):
        return ModelNotFound(
            f"{what}: {details}. Check the model name, version or label; `recommend status "
            f"--server {address} --model <name>` lists what is served"
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequest(f"{what}: the server rejected the request: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            f"{what}: no answer from {address} within the deadline ({details}); the server is "
            "up but busy or still loading: retry or raise --timeout"
        )
    return ServingError(f"{what}: server answered {code.name}: {details}")


def recommendations(
    out: Mapping[str, np.ndarray], users: Sequence[str], k: int, model: str, served: int
) -> list[Recommendation]:
    """The top-``k`` rows of a Predict answer for ``users``, checked against the contract."""
    missing = {contract.OUTPUT_ITEM_IDS, contract.OUTPUT_SCORES, contract.OUTPUT_TITLES} - set(out)
    if missing:
        raise ServingError(
            f"model {model} version {served} does not meet the serving contract: outputs "
            f"{sorted(missing)} missing, found {sorted(out)}"
        )
    served_k = int(out[contract.OUTPUT_ITEM_IDS].shape[1])
    if k > served_k:
        raise InvalidRequest(
            f"k={k} is larger than the {served_k} items model {model} version {served} "
            f"returns per user; ask for k <= {served_k} or export the model with a larger top_k"
        )
    recs = []
    for row, user in enumerate(users):
        items = [
            (
                _text(out[contract.OUTPUT_ITEM_IDS][row, j]),
                _text(out[contract.OUTPUT_TITLES][row, j]),
                float(out[contract.OUTPUT_SCORES][row, j]),
            )
            for j in range(k)
        ]
        reasons = (
            [_text(out[contract.OUTPUT_REASONS][row, j]) for j in range(k)]
            if contract.OUTPUT_REASONS in out
            else []
        )
        recs.append(Recommendation(user, items, served, reasons))
    return recs


def signatures(sigs: SignatureDefMap) -> JSONObject:
    """``{name: {"inputs", "outputs", "method_name"}}`` with each tensor as ``(dtype, shape)``."""
    return {
        name: {
            "method_name": sig.method_name,
            "inputs": {k: _tensor_info(v) for k, v in sig.inputs.items()},
            "outputs": {k: _tensor_info(v) for k, v in sig.outputs.items()},
        }
        for name, sig in sigs.signature_def.items()
    }


def _tensor_info(info: TensorInfo) -> tuple[str, tuple[int, ...] | None]:
    from tensorflow.core.framework import types_pb2

    shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
    return types_pb2.DataType.Name(info.dtype), shape


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
