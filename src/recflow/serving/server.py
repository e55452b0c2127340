"""A local model server speaking TensorFlow Serving's gRPC API (``recflow-model-server``).

It stands in for the ``tensorflow_model_server`` binary where that cannot run (no Docker), so it
follows TF Serving's behaviour and messages (checked against server_core.cc, predict_util.cc,
get_model_status_impl.cc); the deliberate differences are listed in ``serving/README.md``:

* A reload (RPC or config file) checks version labels *first*: a label may only point at an
  AVAILABLE version (FAILED_PRECONDITION otherwise, and nothing changes), except that with
  ``--allow_version_labels_for_unavailable_models`` a label not yet assigned elsewhere may.
* A reload then loads every listed version found on disk before answering (TF Serving only
  waits for new *models*), and unloads versions and models no longer listed.
* A version whose load (or warmup) fails ends in state END with the error and is not retried
  while it stays listed and on disk.
* The config file is re-applied when its content changes or the last attempt failed.
* ``--enable_batching`` merges concurrent Predict requests along dimension 0 (see
  ``recflow.serving.batching.AsyncBatcher`` for how the parameters are used; notably a batch
  waits for ``batch_timeout_micros`` only while traffic is concurrent).
* gRPC runs on one asyncio event loop (grpc.aio); model calls run in a thread pool of
  ``--grpc_max_threads`` threads (the number of concurrent unbatched model calls) and reloads
  in a thread of their own. A thread-pool server hands every call from its poller thread to a
  worker (GIL hand-offs among up to 9 threads); at 1,000 req/s on the bench model the loop
  and the batching wait together cut server CPU from ~910 to ~785 us per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from recflow.errors import ConfigError
from recflow.serving.batching import AsyncBatcher, BatchingOptions, QueueFull
from recflow.serving.limits import (
    DEFAULT_MAX_REQUEST_ROWS,
    MAX_RECEIVE,
    LimitExceeded,
    RequestLimits,
    check_input,
    parse_grpc_channel_arguments,
    server_options,
)
from recflow.serving.metrics import ServingMetrics

if TYPE_CHECKING:
    import grpc
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

log = logging.getLogger("recflow.serving.server")

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
_VERSION_DIR = re.compile(r"^\d+$")

# The local server answers on this machine only unless told otherwise (--bind_address);
# TF Serving binds every interface, which a container needs and a laptop should not do.
DEFAULT_BIND_ADDRESS = "127.0.0.1"

# tensorflow_serving.apis.get_model_status_pb2.ModelVersionStatus.State values (no import).
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50


class ServableError(Exception):
    """A request failure carrying the gRPC status code name TF Serving would return."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # grpc.StatusCode member name, e.g. "NOT_FOUND"
        self.message = message


# ---------------------------------------------------------------------------------------------
# One loaded version


@dataclasses.dataclass
class PreparedRequest:
    """A validated PredictRequest: inputs as numpy, outputs wanted, rows if batchable."""

    sig_name: str
    inputs: dict[str, Any]  # alias -> numpy array
    wanted: list[str]
    rows: int | None  # size of the shared batch dimension 0; None: cannot be merged

    def batch_key(self) -> tuple[Any, ...]:
        return (self.sig_name, tuple(sorted((k, v.dtype.str) for k, v in self.inputs.items())))


@dataclasses.dataclass
class Servable:
    name: str
    version: int
    path: Path
    functions: dict[str, Any]  # signature name -> ConcreteFunction
    signature_defs: dict[str, Any]  # signature name -> SignatureDef proto (from saved_model.pb)
    owner: Any = None  # the restored object; its functions need it alive

    def predict(self, request: Any, limits: RequestLimits | None = None) -> Any:
        """Run a PredictRequest; validation and messages follow TF Serving's predict_util."""
        prepared = self.prepare(request, limits)
        return self.respond(prepared, self.run_batch([prepared])[0])

    def prepare(self, request: Any, limits: RequestLimits | None = None) -> PreparedRequest:
        """Validate a PredictRequest and convert its inputs; raises ServableError.

        Shapes and ``limits`` (rows, declared elements) are checked before any input is
        decoded, so an oversized request is refused without allocating it."""
        sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig = self.signature_defs.get(sig_name)
        fn = self.functions.get(sig_name)
        if sig is None or fn is None:
            raise ServableError(
                "FAILED_PRECONDITION",
                f'Serving signature key "{sig_name}" not found. Signatures of {self.name} '
                f"version {self.version}: {sorted(self.functions)}",
            )
        sent, expected = set(request.inputs), set(sig.inputs)
        if len(sent) != len(expected):
            raise ServableError(
                "INVALID_ARGUMENT",
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
            )
        inputs: dict[str, Any] = {}
        rows: set[int] = set()
        batchable = True
        for i, alias in enumerate(sorted(request.inputs)):
            if alias not in sig.inputs:
                raise ServableError(
                    "INVALID_ARGUMENT",
                    f"input tensor alias not found in signature: {alias}. Inputs expected to "
                    f"be in the set {{{','.join(sorted(expected))}}}.",
                )
            proto, info = request.inputs[alias], sig.inputs[alias]
            if proto.dtype != info.dtype:
                raise ServableError(
                    "INVALID_ARGUMENT",
                    f"Expects arg[{i}] to be {_dtype_name(info.dtype)} but "
                    f"{_dtype_name(proto.dtype)} is provided (input {alias!r} of signature "
                    f"{sig_name!r})",
                )
            try:
                check_input(alias, proto, info, sig_name, limits)
            except LimitExceeded as exc:
                raise ServableError(exc.code, exc.message) from None
            try:
                array = tensor_proto_to_numpy(proto)
            except Exception:
                raise ServableError("INVALID_ARGUMENT", f"tensor parsing error: {alias}") from None
            inputs[alias] = array
            # Mergeable only along a batch dimension the signature leaves open ([-1, ...]).
            dims = info.tensor_shape.dim
            if array.ndim == 0 or info.tensor_shape.unknown_rank or not dims or dims[0].size != -1:
                batchable = False
            else:
                rows.add(int(array.shape[0]))
        wanted = list(request.output_filter) or sorted(sig.outputs)
        for alias in request.output_filter:
            if alias not in sig.outputs:
                raise ServableError(
                    "INVALID_ARGUMENT",
                    f"output tensor alias not found in signature: {alias} Outputs expected to be "
                    f"in the set {{{','.join(sorted(sig.outputs))}}}.",
                )
        if len(set(wanted)) != len(wanted):
            raise ServableError("INVALID_ARGUMENT", f"duplicate output tensor alias in {wanted}")
        n_rows = rows.pop() if batchable and len(rows) == 1 else None
        return PreparedRequest(sig_name, inputs, wanted, n_rows)

    def run_batch(self, prepared: Sequence[PreparedRequest]) -> list[dict[str, Any]]:
        """Outputs (numpy) of each request; several requests are merged along dimension 0."""
        import numpy as np

        first = prepared[0]
        if len(prepared) == 1:
            return [self._run(first.sig_name, first.inputs)]
        merged = {
            alias: np.concatenate([p.inputs[alias] for p in prepared], axis=0)
            for alias in first.inputs
        }
        outputs = self._run(first.sig_name, merged)
        total = sum(p.rows or 0 for p in prepared)
        if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
            # The signature does not keep rows aligned with its inputs: no safe split.
            return [self._run(p.sig_name, p.inputs) for p in prepared]
        out, start = [], 0
        for p in prepared:
            end = start + (p.rows or 0)
            out.append({k: v[start:end] for k, v in outputs.items()})
            start = end
        return out

    def _run(self, sig_name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        import tensorflow as tf

        sig = self.signature_defs[sig_name]
        kwargs = {}
        for alias, array in inputs.items():
            try:
                kwargs[alias] = tf.constant(array, dtype=sig.inputs[alias].dtype)
            except (TypeError, ValueError):
                raise ServableError("INVALID_ARGUMENT", f"tensor parsing error: {alias}") from None
        return {k: v.numpy() for k, v in _call(self.functions[sig_name], kwargs, sig_name).items()}

    def respond(self, prepared: PreparedRequest, outputs: dict[str, Any]) -> Any:
        from tensorflow_serving.apis import predict_pb2

        sig = self.signature_defs[prepared.sig_name]
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = prepared.sig_name
        for alias in prepared.wanted:
            numpy_to_tensor_proto(outputs[alias], sig.outputs[alias].dtype, response.outputs[alias])
        return response


# TensorProto <-> numpy without tf.make_ndarray / tf.make_tensor_proto on the request path:
# those cost ~10 and ~30 us per tensor; reading string_val and writing tensor_content directly
# costs ~1 us (measured on the top-10 model, see bench/serving.py).
_DT_STRING = 7
_NUMERIC = {1: "<f4", 2: "<f8", 3: "<i4", 4: "|u1", 5: "<i2", 6: "|i1", 9: "<i8", 10: "|b1",
            17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}  # fmt: skip


def tensor_proto_to_numpy(proto: Any) -> Any:
    import numpy as np

    dims = tuple(int(d.size) for d in proto.tensor_shape.dim)
    count = int(np.prod(dims)) if dims else 1
    if proto.dtype == _DT_STRING and len(proto.string_val) == count:
        array = np.empty(count, dtype=object)
        array[:] = list(proto.string_val)
        return array.reshape(dims)
    if proto.dtype in _NUMERIC and proto.tensor_content:
        flat = np.frombuffer(proto.tensor_content, dtype=_NUMERIC[proto.dtype])
        if flat.size == count:
            return flat.reshape(dims)
    import tensorflow as tf  # repeated values, *_val fields, other dtypes: TF's own reader

    return tf.make_ndarray(proto)


def numpy_to_tensor_proto(array: Any, dtype: int, out: Any) -> None:
    """Fill the TensorProto ``out`` with ``array`` (of signature dtype enum ``dtype``)."""
    import numpy as np

    out.dtype = dtype
    for size in array.shape:
        out.tensor_shape.dim.add(size=size)
    if dtype == _DT_STRING:
        out.string_val.extend(array.ravel().tolist())
    elif dtype in _NUMERIC:
        out.tensor_content = np.ascontiguousarray(array, dtype=_NUMERIC[dtype]).tobytes()
    else:
        import tensorflow as tf

        out.CopyFrom(tf.make_tensor_proto(array, dtype=dtype))


def _dtype_name(enum: int) -> str:
    import tensorflow as tf

    try:
        return str(tf.dtypes.as_dtype(enum).name)
    except (TypeError, ValueError):
        return f"dtype enum {enum}"


def _call(fn: Any, kwargs: dict[str, Any], sig_name: str) -> dict[str, Any]:
    import tensorflow as tf

    try:
        return dict(fn(**kwargs))
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


def load_servable(name: str, version: int, path: Path) -> Servable:
    """tf.saved_model.load + replay of the warmup requests; any failure raises."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    metas = [m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags]
    if not metas:
        raise ValueError(f"{path}: no MetaGraph tagged 'serve' in saved_model.pb")
    signature_defs = {k: v for k, v in metas[0].signature_def.items()}
    loaded = tf.saved_model.load(str(path), tags=["serve"])
    functions = {k: loaded.signatures[k] for k in loaded.signatures}
    servable = Servable(name, version, path, functions, signature_defs, owner=loaded)
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


# ---------------------------------------------------------------------------------------------
# Versions of every model: what the policy asks for, what is loaded, and the labels


@dataclasses.dataclass
class VersionRecord:
    state: int
    error: str | None = None
    servable: Servable | None = None


def scan_versions(base_path: Path) -> dict[int, Path]:
    """Integer-named folders holding a saved_model.pb; scratch folders such as '.3.tmp-x' skip."""
    if not base_path.is_dir():
        return {}
    out: dict[int, Path] = {}
    for child in base_path.iterdir():
        if _VERSION_DIR.match(child.name) and (child / "saved_model.pb").is_file():
            out[int(child.name)] = child
    return out


def aspired_versions(model: Any, on_disk: dict[int, Path]) -> set[int]:
    policy = model.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "specific":
        return set(policy.specific.versions) & set(on_disk)
    if which == "all":
        return set(on_disk)
    n = policy.latest.num_versions if which == "latest" else 1
    return set(sorted(on_disk)[-max(n, 1) :])


class ModelManager:
    """The state of every model; reload/poll are serialised, requests only take a short lock."""

    def __init__(
        self,
        *,
        allow_version_labels_for_unavailable_models: bool = False,
        loader: Callable[[str, int, Path], Servable] = load_servable,
    ) -> None:
        from tensorflow_serving.config import model_server_config_pb2 as pb

        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._loader = loader
        self._apply_lock = threading.Lock()  # one reload or poll at a time
        self._lock = threading.Lock()  # guards the three maps below; never held while loading
        self._config = pb.ModelServerConfig()
        self._records: dict[str, dict[int, VersionRecord]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._blocked: set[tuple[str, int]] = set()  # failed loads, not retried while aspired
        self._missing_logged: set[str] = set()
        self.metrics = ServingMetrics()

    @property
    def requests(self) -> Counter[tuple[str, str, str]]:
        """Request counts by (model, api, status code), as in the Prometheus text."""
        return self.metrics.counts()

    # -- config ------------------------------------------------------------------------------
    @property
    def config(self) -> ModelServerConfig:
        with self._lock:
            return self._config

    def reload(self, new: ModelServerConfig) -> None:
        """Apply a config the way ServerCore::ReloadConfig does; raises ServableError."""
        with self._apply_lock:
            which = new.WhichOneof("config")
            if which is None:
                log.info("Taking no action for empty config.")
                return
            if which != "model_config_list":
                raise ServableError(
                    "INVALID_ARGUMENT",
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported",
                )
            self._validate(new)
            labels = self._check_labels(new)
            old_names = {m.name for m in self.config.model_config_list.config}
            with self._lock:
                self._config = new
                self._labels = labels
            self.metrics.set_models(m.name for m in new.model_config_list.config)
            self._sync()
            self._raise_if_new_models_failed(
                [m.name for m in new.model_config_list.config if m.name not in old_names]
            )

    @staticmethod
    def _validate(config: ModelServerConfig) -> None:
        names = Counter(m.name for m in config.model_config_list.config)
        for name, n in names.items():
            if n > 1:
                raise ServableError(
                    "INVALID_ARGUMENT", f"Illegal to list model {name}, {n} times in config list"
                )
        for m in config.model_config_list.config:
            if not m.name or not m.base_path:
                raise ServableError(
                    "INVALID_ARGUMENT",
                    f"every model config needs a name and a base_path, found name={m.name!r} "
                    f"base_path={m.base_path!r}",
                )
            if m.model_platform not in ("", "tensorflow"):
                raise ServableError(
                    "INVALID_ARGUMENT",
                    f"Model {m.name} requests unsupported platform {m.model_platform}",
                )

    def _check_labels(self, config: ModelServerConfig) -> dict[str, dict[str, int]]:
        with self._lock:
            current = {k: dict(v) for k, v in self._labels.items()}
            available = {
                (name, v)
                for name, recs in self._records.items()
                for v, r in recs.items()
                if r.state == AVAILABLE
            }
        out: dict[str, dict[str, int]] = {}
        for m in config.model_config_list.config:
            for label, version in m.version_labels.items():
                existing = current.get(m.name, {}).get(label)
                allowed = self._allow_unavailable_labels and existing in (None, version)
                if not allowed and (m.name, version) not in available:
                    raise ServableError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model {m.name}, "
                        "which is not currently available for inference",
                    )
                out.setdefault(m.name, {})[label] = version
        return out

    def _raise_if_new_models_failed(self, names: list[str]) -> None:
        failed = []
        with self._lock:
            for name in names:
                recs = self._records.get(name, {})
                if recs and not any(r.state == AVAILABLE for r in recs.values()):
                    errors = "; ".join(f"version {v}: {r.error}" for v, r in recs.items())
                    failed.append(f"{{name: {name} due to error: {errors}}}")
        if failed:
            raise ServableError(
                "UNKNOWN",
                f"{len(failed)} model(s) did not become available: {{{', '.join(failed)}}}",
            )

    # -- file system -------------------------------------------------------------------------
    def poll(self) -> None:
        """One pass over every base path: load newly aspired versions, unload the others."""
        with self._apply_lock:
            self._sync()

    def _sync(self) -> None:
        config = self.config
        listed = set()
        for model in config.model_config_list.config:
            listed.add(model.name)
            base = Path(model.base_path)
            if not base.is_dir() and model.name not in self._missing_logged:
                self._missing_logged.add(model.name)
                log.warning("model %s: base path %s does not exist yet; polling", model.name, base)
            on_disk = scan_versions(base)
            aspired = aspired_versions(model, on_disk)
            # A failed version is retried only after it stopped being aspired for a while.
            self._blocked = {(n, v) for n, v in self._blocked if n != model.name or v in aspired}
            for version in sorted(aspired):
                if (
                    self._state(model.name, version) != AVAILABLE
                    and (model.name, version) not in self._blocked
                ):
                    self._load(model.name, version, on_disk[version])
            # Unload after loading, so a model keeps serving while its versions change.
            for version in self._loaded_versions(model.name) - aspired:
                self._unload(model.name, version)
        with self._lock:
            gone = [n for n in self._records if n not in listed]
        for name in gone:
            for version in self._loaded_versions(name):
                self._unload(name, version)

    def _state(self, name: str, version: int) -> int | None:
        with self._lock:
            rec = self._records.get(name, {}).get(version)
            return rec.state if rec else None

    def _loaded_versions(self, name: str) -> set[int]:
        with self._lock:
            return {v for v, r in self._records.get(name, {}).items() if r.servable is not None}

    def _set(self, name: str, version: int, record: VersionRecord) -> None:
        with self._lock:
            self._records.setdefault(name, {})[version] = record

    def _load(self, name: str, version: int, path: Path) -> None:
        self._set(name, version, VersionRecord(START))
        self._set(name, version, VersionRecord(LOADING))
        log.info("Loading servable: {name: %s version: %d} from %s", name, version, path)
        started = time.monotonic()
        try:
            servable = self._loader(name, version, path)
        except Exception as exc:  # any load or warmup failure ends this version with an error
            self._blocked.add((name, version))
            self._set(name, version, VersionRecord(END, f"{type(exc).__name__}: {exc}"))
            log.error("Loading servable: {name: %s version: %d} failed: %s", name, version, exc)
            return
        self._set(name, version, VersionRecord(AVAILABLE, None, servable))
        log.info(
            "Successfully loaded servable version {name: %s version: %d} in %.2fs",
            name,
            version,
            time.monotonic() - started,
        )

    def _unload(self, name: str, version: int) -> None:
        # Requests already holding the Servable finish with it; new ones cannot find it.
        self._set(name, version, VersionRecord(UNLOADING))
        self._set(name, version, VersionRecord(END))
        log.info("Unloaded servable version {name: %s version: %d}", name, version)

    # -- requests ----------------------------------------------------------------------------
    def resolve_version(self, spec: Any) -> tuple[str, int | None]:
        """(name, version or None for latest) from a ModelSpec; label errors as TF Serving."""
        if not spec.name:
            raise ServableError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return spec.name, int(spec.version.value)
        if choice == "version_label":
            with self._lock:
                version = self._labels.get(spec.name, {}).get(spec.version_label)
            if version is None:
                raise ServableError(
                    "INVALID_ARGUMENT",
                    f"Unrecognized servable version label: {spec.version_label}",
                )
            return spec.name, version
        return spec.name, None

    def servable(self, spec: Any) -> Servable:
        name, version = self.resolve_version(spec)
        with self._lock:
            recs = self._records.get(name, {})
            if version is None:
                ready = [v for v, r in recs.items() if r.servable is not None]
                if not ready:
                    raise ServableError(
                        "NOT_FOUND", f"Servable not found for request: Latest({name})"
                    )
                version = max(ready)
            rec = recs.get(version)
            if rec is None or rec.servable is None:
                raise ServableError(
                    "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
                )
            return rec.servable

    def status(self, spec: Any) -> list[tuple[int, int, str | None]]:
        """(version, state, error) as GetModelStatus reports them, NOT_FOUND as TF Serving."""
        name, version = self.resolve_version(spec)
        with self._lock:
            recs = dict(self._records.get(name, {}))
        if version is not None:
            if version not in recs:
                raise ServableError(
                    "NOT_FOUND", f"Could not find version {version} of model {name}"
                )
            recs = {version: recs[version]}
        if not recs:
            raise ServableError("NOT_FOUND", f"Could not find any versions of model {name}")
        return [(v, r.state, r.error) for v, r in sorted(recs.items())]

    def snapshot(self) -> dict[str, dict[int, int]]:
        with self._lock:
            return {n: {v: r.state for v, r in recs.items()} for n, recs in self._records.items()}

    def unload_all(self) -> None:
        with self._apply_lock:
            for name in list(self.snapshot()):
                for version in self._loaded_versions(name):
                    self._unload(name, version)


# ---------------------------------------------------------------------------------------------
# gRPC services


async def _abort(context: grpc.aio.ServicerContext, exc: ServableError) -> NoReturn:
    import grpc

    await context.abort(getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN), exc.message)
    raise AssertionError("grpc context.abort returned")  # it raises; keeps type checkers honest


def _build_servicers(
    manager: ModelManager,
    model_executor: futures.Executor,
    admin_executor: futures.Executor,
    batching: BatchingOptions | None = None,
    limits: RequestLimits | None = None,
) -> tuple[Any, Any]:
    """asyncio servicers: parsing, validation and responses run on the event loop (~30 us),
    TensorFlow runs in ``model_executor`` and reloads in ``admin_executor``, so neither a
    model call nor a model load ever blocks the loop."""
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        prediction_service_pb2_grpc,
    )

    metrics = manager.metrics

    def run_merged(key: Any, items: Sequence[tuple[Servable, PreparedRequest]]) -> list[Any]:
        return items[0][0].run_batch([prepared for _, prepared in items])

    batcher: AsyncBatcher[tuple[Servable, PreparedRequest], Any] | None = None
    if batching is not None:
        batcher = AsyncBatcher(run_merged, batching, model_executor, on_batch=metrics.observe_batch)

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            name = request.model_spec.name
            try:
                servable = manager.servable(request.model_spec)
                prepared = servable.prepare(request, limits)
                if batcher is not None and prepared.rows is not None:
                    key = (id(servable), *prepared.batch_key())
                    outputs = await batcher.submit(key, (servable, prepared), prepared.rows)
                else:
                    loop = asyncio.get_running_loop()
                    single = await loop.run_in_executor(
                        model_executor, servable.run_batch, [prepared]
                    )
                    outputs = single[0]
                response = servable.respond(prepared, outputs)
            except ServableError as exc:
                failure = ServableError(exc.code, exc.message)
            except QueueFull as exc:
                failure = ServableError("UNAVAILABLE", str(exc))
            else:
                metrics.observe(name, "Predict", "OK", time.perf_counter() - started)
                return response
            metrics.observe(name, "Predict", failure.code, time.perf_counter() - started)
            # Abort outside the except block and without the request in this frame: the abort's
            # exception (and anything that keeps it) must not keep a large request alive.
            request = None
            await _abort(context, failure)

        async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                if not request.metadata_field:
                    raise ServableError(
                        "INVALID_ARGUMENT",
                        "GetModelMetadataRequest must specify at least one metadata_field",
                    )
                for fld in request.metadata_field:
                    if fld != "signature_def":
                        raise ServableError(
                            "INVALID_ARGUMENT", f"Metadata field {fld} is not supported"
                        )
                servable = manager.servable(request.model_spec)
            except ServableError as exc:
                await _abort(context, exc)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            sigs = get_model_metadata_pb2.SignatureDefMap()
            for key, sig in servable.signature_defs.items():
                sigs.signature_def[key].CopyFrom(sig)
            response.metadata["signature_def"].Pack(sigs)
            return response

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                rows = manager.status(request.model_spec)
            except ServableError as exc:
                await _abort(context, exc)
            response = get_model_status_pb2.GetModelStatusResponse()
            for version, state, error in rows:
                item = response.model_version_status.add(version=version, state=state)
                if error:
                    item.status.error_code = 2  # tensorflow.error.UNKNOWN
                    item.status.error_message = error
            return response

        async def HandleReloadConfigRequest(
            self, request: Any, context: grpc.aio.ServicerContext
        ) -> Any:
            loop = asyncio.get_running_loop()
            try:  # loading takes seconds: off the loop, so Predicts keep being served
                await loop.run_in_executor(admin_executor, manager.reload, request.config)
            except ServableError as exc:
                log.error("HandleReloadConfigRequest failed: %s", exc.message)
                await _abort(context, exc)
            return model_management_pb2.ReloadConfigResponse()

    return PredictionService(), ModelService()


# ---------------------------------------------------------------------------------------------
# Metrics over the REST port (Prometheus text format)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _metrics_text(manager: ModelManager) -> str:
    return manager.metrics.text(manager.snapshot())


def _start_metrics(manager: ModelManager, host: str, port: int, path: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            found = self.path.split("?")[0] == path
            body = (_metrics_text(manager) if found else f"only {path} is served here\n").encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet access log
            return

    server_class = ThreadingHTTPServer
    if ":" in host:  # an IPv6 address

        class _V6(ThreadingHTTPServer):
            address_family = socket.AF_INET6

        server_class = _V6
    httpd = server_class((host, port), Handler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd


# ---------------------------------------------------------------------------------------------
# The server


class LocalModelServer:
    """gRPC PredictionService + ModelService over a ModelManager, with the polling loops.

    ``config`` is the model config file (re-read when ``model_config_file_poll_wait_seconds``
    > 0) or a ModelServerConfig. ``start()`` loads the initial config before opening the port,
    as TF Serving does; it raises ServableError if that fails.
    """

    def __init__(
        self,
        config: Path | ModelServerConfig,
        *,
        port: int = 8500,
        file_system_poll_wait_seconds: float = 1.0,
        model_config_file_poll_wait_seconds: float = 0.0,
        allow_version_labels_for_unavailable_models: bool = False,
        max_workers: int = 8,
        rest_api_port: int = 0,
        metrics_path: str | None = None,
        batching: BatchingOptions | None = None,
        host: str = DEFAULT_BIND_ADDRESS,
        limits: RequestLimits | None = None,
        grpc_options: Sequence[tuple[str, int | str]] | None = None,
    ) -> None:
        self.manager = ModelManager(
            allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models
        )
        self._config_file = Path(config) if isinstance(config, str | Path) else None
        self._initial = None if self._config_file else config
        self._port = port
        self._fs_wait = file_system_poll_wait_seconds
        self._config_wait = model_config_file_poll_wait_seconds if self._config_file else 0.0
        self._max_workers = max_workers
        self._rest_port = rest_api_port
        self._metrics_path = metrics_path
        self.batching = batching
        self.host = host
        # Without explicit limits: the batching max_batch_size, else DEFAULT_MAX_REQUEST_ROWS.
        self.limits = limits or (
            RequestLimits(batching.max_batch_size, "max_batch_size of the batching parameters")
            if batching is not None
            else RequestLimits()
        )
        options, receive = server_options(grpc_options or ())
        if receive != self.limits.max_receive_bytes:
            self.limits = dataclasses.replace(self.limits, max_receive_bytes=receive)
        self._grpc_options = options
        self._stop = threading.Event()
        self._grpc: grpc.aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._model_pool: futures.ThreadPoolExecutor | None = None
        self._admin_pool: futures.ThreadPoolExecutor | None = None
        self._http: ThreadingHTTPServer | None = None
        self._poller: threading.Thread | None = None
        self._file_text: str | None = None  # last config file content applied successfully
        self._file_error: str | None = None
        self.port = port

    def _read_file_config(self) -> tuple[str, ModelServerConfig]:
        from recflow.serving.model_config import parse_text

        assert self._config_file is not None
        try:
            text = self._config_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"model config file {self._config_file} does not exist; write one (an empty "
                "file is a valid empty config) or pass --model_name/--model_base_path"
            ) from None
        return text, parse_text(text, source=str(self._config_file))

    def start(self) -> LocalModelServer:
        if self._config_file is not None:
            text, config = self._read_file_config()
            self.manager.reload(config)
            self._file_text = text
        elif self._initial is not None:
            self.manager.reload(self._initial)
        # grpc.aio on its own event loop thread: one thread receives and answers every call,
        # instead of a poller thread handing each call to a pool thread (two GIL hand-offs
        # per request, and up to max_workers threads contending for the GIL with TensorFlow).
        self._model_pool = futures.ThreadPoolExecutor(
            max_workers=self._max_workers, thread_name_prefix="model"
        )
        self._admin_pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="reload")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._loop_thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
        self._loop_thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start_grpc(), loop).result()
        except BaseException:
            self._close_loop()
            raise
        log.info("Running gRPC ModelServer at %s ...", _host_port(self.host, self.port))
        log.info(
            "Request limits: %d rows (%s), %d bytes per message (%s)",
            self.limits.max_rows,
            self.limits.rows_from,
            self.limits.max_receive_bytes,
            MAX_RECEIVE,
        )
        if self._rest_port > 0 and self._metrics_path:
            self._http = _start_metrics(
                self.manager, self.host, self._rest_port, self._metrics_path
            )
            log.info(
                "Exporting metrics at http://%s%s",
                _host_port(self.host, self._rest_port),
                self._metrics_path,
            )
        self._poller = threading.Thread(target=self._poll_loop, name="poll", daemon=True)
        self._poller.start()
        return self

    async def _start_grpc(self) -> int:
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        assert self._model_pool is not None and self._admin_pool is not None
        # gRPC's own 4 MiB receive limit unless --grpc_channel_arguments says otherwise (TF
        # Serving lifts it to 2 GiB; here a bounded request is the point, see limits.py).
        server = grpc.aio.server(options=self._grpc_options)
        prediction, models = _build_servicers(
            self.manager, self._model_pool, self._admin_pool, self.batching, self.limits
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
        try:
            port = server.add_insecure_port(_host_port(self.host, self._port))
        except RuntimeError:  # grpcio raises where older versions returned 0
            port = 0
        if port == 0:
            raise OSError(
                f"could not bind gRPC to {_host_port(self.host, self._port)}; is another server "
                "using the port, or is the address not one of this machine's?"
            )
        await server.start()
        self._grpc = server
        return int(port)

    def _close_loop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=30)
            self._loop.close()
            self._loop = self._loop_thread = None
        for pool in (self._model_pool, self._admin_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._model_pool = self._admin_pool = None

    def _poll_loop(self) -> None:
        # Zero or negative intervals poll once (at start, done above), as TF Serving's flags say.
        next_fs = time.monotonic() + self._fs_wait if self._fs_wait > 0 else None
        next_cfg = time.monotonic() + self._config_wait if self._config_wait > 0 else None
        while not self._stop.is_set():
            now = time.monotonic()
            if next_cfg is not None and now >= next_cfg:
                self._poll_config_file()
                next_cfg = now + self._config_wait
            if next_fs is not None and now >= next_fs:
                self.manager.poll()
                next_fs = now + self._fs_wait
            due = [t for t in (next_fs, next_cfg) if t is not None]
            if not due:
                return
            self._stop.wait(max(0.01, min(due) - time.monotonic()))

    def _poll_config_file(self) -> None:
        try:
            text, config = self._read_file_config()
            if text == self._file_text:
                return
            self.manager.reload(config)
            self._file_text, self._file_error = text, None
            log.info("Applied model config file %s", self._config_file)
        except (ServableError, ConfigError) as exc:
            message = str(exc)
            if message != self._file_error:  # one log line per distinct failure
                log.error(
                    "Reloading %s failed; previous config stays: %s", self._config_file, message
                )
            self._file_error = message

    def stop(self, grace: float = 5.0) -> None:
        self._stop.set()
        if self._grpc is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._grpc.stop(grace), self._loop).result()
            self._grpc = None
        self._close_loop()
        if self._http is not None:
            self._http.shutdown()
            self._http = None
        if self._poller is not None:
            self._poller.join(timeout=60)
        self.manager.unload_all()

    def wait(self) -> None:
        self._stop.wait()

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Flags (TF Serving's names)


def parse_batching_parameters(text: str, *, source: str = "<text>") -> dict[str, Any]:
    """TF Serving's BatchingParameters text (its own schema, ``tfs_protos``): the fields set,
    wrapper values unwrapped (``{"max_batch_size": 128, "allowed_batch_sizes": [32, ...]}``).
    ConfigError names ``source`` and the problem when TF Serving would refuse the text."""
    from recflow.serving.tfs_protos import parse_batching_text

    return batching_fields(parse_batching_text(text, source=source))


def batching_fields(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in params.ListFields():
        if field.message_type is not None:
            out[field.name] = value.value
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def parse_monitoring_config(text: str, *, source: str = "<text>") -> str | None:
    """The Prometheus path of a MonitoringConfig text if ``prometheus_config.enable``."""
    from recflow.serving.tfs_protos import (
        MONITORING_EXAMPLE,
        MonitoringConfig,
        parse_text_proto,
        prometheus_path,
    )

    config = parse_text_proto(text, MonitoringConfig(), source=source, example=MONITORING_EXAMPLE)
    return prometheus_path(config)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, found {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recflow-model-server",
        description="Local stand-in for tensorflow_model_server (same gRPC API and flags).",
    )
    p.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    p.add_argument(
        "--bind_address",
        default=DEFAULT_BIND_ADDRESS,
        help="interface for the gRPC and metrics ports (default %(default)s: this machine "
        "only; 0.0.0.0 inside a container's network). recflow's flag: TF Serving binds all",
    )
    p.add_argument(
        "--rest_api_port",
        type=int,
        default=0,
        help="HTTP port; only Prometheus metrics are served there (0 = off)",
    )
    p.add_argument("--model_config_file", default="", help="text-format ModelServerConfig")
    p.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="re-read the config file this often (0 = read once)",
    )
    p.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="look for new version directories this often (0 = once)",
    )
    p.add_argument("--model_name", default="default", help="single-model mode: model name")
    p.add_argument("--model_base_path", default="", help="single-model mode: base path")
    p.add_argument(
        "--allow_version_labels_for_unavailable_models",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="let a new label point at a version that is not loaded yet",
    )
    p.add_argument(
        "--enable_batching",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="merge concurrent Predict requests (see --batching_parameters_file)",
    )
    p.add_argument("--batching_parameters_file", default="")
    p.add_argument(
        "--monitoring_config_file",
        default="",
        help="prometheus_config { enable: true path: ... } (needs --rest_api_port)",
    )
    p.add_argument(
        "--grpc_max_threads",
        type=int,
        default=8,
        help="threads running model calls without batching (gRPC itself runs on one event loop)",
    )
    p.add_argument(
        "--load_delay_seconds",
        type=float,
        default=0.0,
        help="recflow only: wait this long before each model load (a cold GPU's first load, "
        "for testing promotion deadlines)",
    )
    p.add_argument(
        "--grpc_channel_arguments",
        default="",
        help="comma-separated gRPC server arguments, TF Serving's form, e.g. "
        f"{MAX_RECEIVE}=8388608 (default receive limit: gRPC's 4 MiB)",
    )
    p.add_argument(
        "--max_request_rows",
        type=int,
        default=DEFAULT_MAX_REQUEST_ROWS,
        help="rows one Predict may carry when batching is off (default %(default)s; TF "
        "Serving has no limit there); with --enable_batching max_batch_size applies",
    )
    p.add_argument(
        "--tensorflow_intra_op_parallelism",
        type=int,
        default=0,
        help="threads one TensorFlow op may use (0 = TensorFlow's choice, one per core)",
    )
    p.add_argument(
        "--tensorflow_inter_op_parallelism",
        type=int,
        default=0,
        help="TensorFlow ops run in parallel (0 = TensorFlow's choice, one per core)",
    )
    return p


def configure_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """Apply TF Serving's thread flags; only possible before TensorFlow runs anything."""
    if intra_op <= 0 and inter_op <= 0:
        return
    import tensorflow as tf

    try:
        if intra_op > 0:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op > 0:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as exc:  # TensorFlow's runtime was already initialised in this process
        raise ConfigError(f"cannot set TensorFlow thread counts now: {exc}") from None


def _single_model_config(name: str, base_path: str) -> ModelServerConfig:
    from tensorflow_serving.config import model_server_config_pb2 as pb

    config = pb.ModelServerConfig()
    model = config.model_config_list.config.add(
        name=name, base_path=str(Path(base_path).resolve()), model_platform="tensorflow"
    )
    model.model_version_policy.latest.num_versions = 1
    return config


def server_from_args(args: argparse.Namespace) -> LocalModelServer:
    configure_tensorflow_threads(
        args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism
    )
    from recflow.serving import tfs_protos

    batching = None
    if args.enable_batching:
        if args.batching_parameters_file:
            params = tfs_protos.read_batching_parameters(args.batching_parameters_file)
            rows_from = f"max_batch_size of {args.batching_parameters_file}"
        else:
            params = tfs_protos.BatchingParameters()
            rows_from = "TF Serving's default max_batch_size (no --batching_parameters_file)"
        batching = BatchingOptions.from_proto(params)
        limits = RequestLimits(batching.max_batch_size, rows_from)
        log.info("Batching Predict requests: %s", batching)
    elif args.batching_parameters_file:  # TF Serving's own refusal (model_servers/server.cc)
        raise ConfigError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    else:
        limits = RequestLimits(args.max_request_rows, "--max_request_rows")
    grpc_options = parse_grpc_channel_arguments(args.grpc_channel_arguments)
    metrics_path = None
    if args.monitoring_config_file:
        metrics_path = tfs_protos.prometheus_path(
            tfs_protos.read_monitoring_config(args.monitoring_config_file)
        )
        if metrics_path and args.rest_api_port <= 0:
            log.warning("monitoring config asks for Prometheus but --rest_api_port is 0; skipped")
    config: Path | ModelServerConfig
    if args.model_config_file:  # wins over --model_name/--model_base_path, as in TF Serving
        config = Path(args.model_config_file)
    elif args.model_base_path:
        config = _single_model_config(args.model_name, args.model_base_path)
    else:
        raise ConfigError(
            "no models to serve: pass --model_config_file <file> or --model_base_path <dir>"
        )
    server = LocalModelServer(
        config,
        port=args.port,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        max_workers=args.grpc_max_threads,
        rest_api_port=args.rest_api_port,
        metrics_path=metrics_path,
        batching=batching,
        host=args.bind_address,
        limits=limits,
        grpc_options=grpc_options,
    )
    if args.load_delay_seconds > 0:
        server.manager._loader = delayed_loader(args.load_delay_seconds)
    return server


def delayed_loader(
    seconds: float, loader: Callable[[str, int, Path], Servable] = load_servable
) -> Callable[[str, int, Path], Servable]:
    """``--load_delay_seconds``: every load waits first (state LOADING meanwhile), as a first
    load on a cold GPU does (CUDA start-up, warmup); the reload RPC waits with it."""

    def load(name: str, version: int, path: Path) -> Servable:
        log.info("Load delay: %.1fs before loading {name: %s version: %d}", seconds, name, version)
        time.sleep(seconds)
        return loader(name, version, path)

    return load


@contextlib.contextmanager
def _signals_set(event: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        log.info("Received signal %d; shutting down", signum)
        event.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        server = server_from_args(args)
        server.start()
    except (ConfigError, ServableError, OSError) as exc:
        log.error("recflow-model-server could not start: %s", exc)
        return 1
    # TensorFlow and the loaded models leave ~400k tracked objects; a full collection walks
    # them all (~240 ms measured on the bench model, every in-flight request stalls). Collect
    # the startup garbage once, then freeze the survivors out of later collections. Objects
    # made by later reloads are collected as usual.
    gc.collect()
    gc.freeze()
    shutdown = threading.Event()
    with _signals_set(shutdown):
        while not shutdown.wait(0.5):  # a timeout keeps the main thread responsive to signals
            pass
        server.stop()
    log.info("recflow-model-server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
