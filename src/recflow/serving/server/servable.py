"""One loaded model version: its signatures, request validation, batched runs and warmup.

A version is loaded as TF Serving loads it (``recflow.savedmodel.load_signatures``: the
MetaGraph and checkpoint into a session, each request a run of the signature's tensors), not
with ``tf.saved_model.load``, which rebuilds the Python objects and so answers models TF
Serving cannot. Validation and messages follow TF Serving's predict_util.cc; a failure raises
ServableError with the gRPC status code TF Serving would answer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.errors import ServableError
from recflow.serving.batching import BatchingOptions, merge_inputs, split_outputs
from recflow.serving.limits import RequestLimits, check_input
from recflow.serving.server.codec import dtype_name, numpy_to_tensor_proto, tensor_proto_to_numpy

if TYPE_CHECKING:
    import numpy as np
    from tensorflow.core.framework.tensor_pb2 import TensorProto
    from tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef
    from tensorflow_serving.apis.predict_pb2 import PredictRequest, PredictResponse

log = logging.getLogger("recflow.serving.server")

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000

Arrays = dict[str, "np.ndarray"]  # alias -> numpy array
SignatureRun = Callable[[Arrays], Arrays]  # one signature: inputs by alias -> outputs by alias


@dataclasses.dataclass
class PreparedRequest:
    """A validated PredictRequest: inputs as numpy, outputs wanted, rows if batchable."""

    sig_name: str
    inputs: Arrays
    wanted: list[str]
    rows: int | None  # size of the shared batch dimension 0; None: cannot be merged

    def batch_key(self) -> tuple[object, ...]:
        return (self.sig_name, tuple(sorted((k, v.dtype.str) for k, v in self.inputs.items())))


@dataclasses.dataclass
class Servable:
    name: str
    version: int
    path: Path
    functions: dict[str, SignatureRun]  # by signature name
    signature_defs: dict[str, SignatureDef]  # by signature name (from saved_model.pb)
    owner: object = None  # what the functions run in (the session); they need it alive

    def predict(
        self, request: PredictRequest, limits: RequestLimits | None = None
    ) -> PredictResponse:
        """Run a PredictRequest; validation and messages follow TF Serving's predict_util."""
        prepared = self.prepare(request, limits)
        return self.respond(prepared, self.run_batch([prepared])[0])

    def prepare(
        self, request: PredictRequest, limits: RequestLimits | None = None
    ) -> PreparedRequest:
        """Validate a PredictRequest and convert its inputs; raises ServableError.

        Shapes and ``limits`` (rows, declared elements) are checked before any input is
        decoded, so an oversized request is refused without allocating it."""
        sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig = self.signature_defs.get(sig_name)
        if sig is None or self.functions.get(sig_name) is None:
            raise ServableError(
                "FAILED_PRECONDITION",
                f'Serving signature key "{sig_name}" not found. Signatures of {self.name} '
                f"version {self.version}: {sorted(self.functions)}",
            )
        _check_input_names(set(request.inputs), set(sig.inputs))
        inputs: Arrays = {}
        rows: set[int] = set()
        batchable = True
        for i, alias in enumerate(sorted(request.inputs)):
            array = _decode_input(i, alias, request.inputs[alias], sig, sig_name, limits)
            inputs[alias] = array
            # Mergeable only along a batch dimension the signature leaves open ([-1, ...]).
            shape = sig.inputs[alias].tensor_shape
            if array.ndim == 0 or shape.unknown_rank or not shape.dim or shape.dim[0].size != -1:
                batchable = False
            else:
                rows.add(int(array.shape[0]))
        wanted = _wanted_outputs(list(request.output_filter), sig)
        n_rows = rows.pop() if batchable and len(rows) == 1 else None
        return PreparedRequest(sig_name, inputs, wanted, n_rows)

    def run_batch(
        self, prepared: Sequence[PreparedRequest], batching: BatchingOptions | None = None
    ) -> list[Arrays]:
        """Outputs (numpy) of each request; several requests are merged along dimension 0,
        padded to an allowed batch size when ``batching`` has them (``batching.merge_inputs``)."""
        first = prepared[0]
        if len(prepared) == 1 and (batching is None or not batching.allowed_batch_sizes):
            return [self._run(first.sig_name, first.inputs)]
        merged, sizes = merge_inputs([p.inputs for p in prepared], batching)
        outputs = self._run(first.sig_name, merged)
        rows = next(iter(merged.values())).shape[0] if merged else 0
        out = split_outputs(outputs, sizes, rows)
        if out is None:  # the signature does not keep rows aligned with its inputs
            return [self._run(p.sig_name, p.inputs) for p in prepared]
        return out

    def _run(self, sig_name: str, inputs: Arrays) -> Arrays:
        import numpy as np
        import tensorflow as tf

        sig = self.signature_defs[sig_name]
        feeds = {}
        for alias, array in inputs.items():
            try:
                dtype = tf.dtypes.as_dtype(sig.inputs[alias].dtype).as_numpy_dtype
                feeds[alias] = np.asarray(array, dtype=dtype)
            except (TypeError, ValueError):
                raise ServableError("INVALID_ARGUMENT", f"tensor parsing error: {alias}") from None
        return _call(self.functions[sig_name], feeds, sig_name)

    def respond(self, prepared: PreparedRequest, outputs: Arrays) -> PredictResponse:
        from tensorflow_serving.apis import predict_pb2

        sig = self.signature_defs[prepared.sig_name]
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = prepared.sig_name
        for alias in prepared.wanted:
            numpy_to_tensor_proto(outputs[alias], sig.outputs[alias].dtype, response.outputs[alias])
        return response


def _check_input_names(sent: set[str], expected: set[str]) -> None:
    if len(sent) != len(expected):
        raise ServableError(
            "INVALID_ARGUMENT",
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
        )


def _decode_input(
    i: int,
    alias: str,
    proto: TensorProto,
    sig: SignatureDef,
    sig_name: str,
    limits: RequestLimits | None,
) -> np.ndarray:
    """Input ``alias`` (the ``i``-th sorted) checked against the SignatureDef, as numpy."""
    if alias not in sig.inputs:
        raise ServableError(
            "INVALID_ARGUMENT",
            f"input tensor alias not found in signature: {alias}. Inputs expected to "
            f"be in the set {{{','.join(sorted(sig.inputs))}}}.",
        )
    info = sig.inputs[alias]
    if proto.dtype != info.dtype:
        raise ServableError(
            "INVALID_ARGUMENT",
            f"Expects arg[{i}] to be {dtype_name(info.dtype)} but "
            f"{dtype_name(proto.dtype)} is provided (input {alias!r} of signature "
            f"{sig_name!r})",
        )
    check_input(alias, proto, info, sig_name, limits)  # LimitExceeded is a ServableError
    try:
        array: np.ndarray = tensor_proto_to_numpy(proto)
    except Exception:
        raise ServableError("INVALID_ARGUMENT", f"tensor parsing error: {alias}") from None
    return array


def _wanted_outputs(output_filter: list[str], sig: SignatureDef) -> list[str]:
    wanted = output_filter or sorted(sig.outputs)
    for alias in output_filter:
        if alias not in sig.outputs:
            raise ServableError(
                "INVALID_ARGUMENT",
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(sig.outputs))}}}.",
            )
    if len(set(wanted)) != len(wanted):
        raise ServableError("INVALID_ARGUMENT", f"duplicate output tensor alias in {wanted}")
    return wanted


def _call(run: SignatureRun, feeds: Arrays, sig_name: str) -> Arrays:
    import tensorflow as tf

    try:
        return run(feeds)
    except (TypeError, ValueError) as exc:  # shapes/structure rejected by the signature
        raise ServableError(
            "INVALID_ARGUMENT", f"inputs do not fit signature {sig_name!r}: {exc}"
        ) from None
    except tf.errors.OpError as exc:
        raise ServableError(_TF_CODES.get(exc.error_code, "UNKNOWN"), exc.message) from None


_TF_CODES = {
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
}


def load_servable(
    name: str, version: int, path: Path, *, threads: tuple[int, int] = (0, 0)
) -> Servable:
    """The version loaded as TF Serving loads it, plus replay of its warmup requests; any
    failure raises. ``threads``: the session's (intra, inter) op threads
    (``cli.session_threads``); a negative inter-op count runs each op in the calling thread."""
    from recflow.savedmodel import load_signatures

    model = load_signatures(path, intra_op_threads=threads[0], inter_op_threads=threads[1])
    signature_defs = dict(model.meta_graph.signature_def)
    functions: dict[str, SignatureRun] = dict(model.signatures)
    servable = Servable(name, version, path, functions, signature_defs, owner=model)
    _warmup(servable)
    return servable


def _warmup(servable: Servable) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    file = servable.path / WARMUP_FILE
    if not file.exists():
        return
    count = 0
    for record in tf.data.TFRecordDataset(str(file)):
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise ValueError(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {file}"
            )
        entry = prediction_log_pb2.PredictionLog()
        entry.ParseFromString(record.numpy())
        if entry.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{file}: unsupported warmup log_type {entry.WhichOneof('log_type')}")
        try:
            servable.predict(entry.predict_log.request)
        except ServableError as exc:
            raise ValueError(f"warmup request {count} of {file} failed: {exc.message}") from None
    log.info(
        "Finished reading warmup data for model %s version %d: %d records",
        servable.name,
        servable.version,
        count,
    )
