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
  ``recflow.serving.async_batcher.AsyncBatcher`` for how the parameters are used; notably a batch
  waits for ``batch_timeout_micros`` only while traffic is concurrent).
* gRPC runs on one asyncio event loop (grpc.aio); model calls run in a thread pool of
  ``--grpc_max_threads`` threads (the number of concurrent unbatched model calls) and reloads
  in a thread of their own. A thread-pool server hands every call from its poller thread to a
  worker (GIL hand-offs among up to 9 threads); at 1,000 req/s on the bench model the loop
  and the batching wait together cut server CPU from ~910 to ~785 us per request.

The package follows the server's layers, each usable alone:

* ``servable``: one loaded version (validation, batched runs, warmup); ``codec``: TensorProto
  <-> numpy on the request path;
* ``manager``: every model's versions, the version policy, labels and reloads;
* ``grpc_services``: PredictionService and ModelService on asyncio;
  ``metrics_http``: the Prometheus text over the REST port;
* ``process``: ``LocalModelServer``, the threads, event loop and pollers, and with
  ``--native_frontend`` the native front end (``recflow.serving.native``) on the public port;
* ``cli``: TF Serving's flags and ``main`` (``python -m recflow.serving.server``).
"""

from recflow.serving.server.cli import (
    batching_fields,
    build_parser,
    configure_tensorflow_threads,
    delayed_loader,
    main,
    parse_batching_parameters,
    parse_monitoring_config,
    server_from_args,
    session_threads,
)
from recflow.serving.server.codec import numpy_to_tensor_proto, tensor_proto_to_numpy
from recflow.serving.server.manager import (
    AVAILABLE,
    END,
    LOADING,
    START,
    UNLOADING,
    ModelManager,
    VersionRecord,
    aspired_versions,
    scan_versions,
)
from recflow.serving.server.process import DEFAULT_BIND_ADDRESS, LocalModelServer
from recflow.serving.server.servable import (
    DEFAULT_SIGNATURE,
    MAX_WARMUP_RECORDS,
    WARMUP_FILE,
    PreparedRequest,
    Servable,
    ServableError,
    load_servable,
)

__all__ = [
    "AVAILABLE",
    "DEFAULT_BIND_ADDRESS",
    "DEFAULT_SIGNATURE",
    "END",
    "LOADING",
    "MAX_WARMUP_RECORDS",
    "START",
    "UNLOADING",
    "WARMUP_FILE",
    "LocalModelServer",
    "ModelManager",
    "PreparedRequest",
    "Servable",
    "ServableError",
    "VersionRecord",
    "aspired_versions",
    "batching_fields",
    "build_parser",
    "configure_tensorflow_threads",
    "delayed_loader",
    "load_servable",
    "main",
    "numpy_to_tensor_proto",
    "parse_batching_parameters",
    "parse_monitoring_config",
    "scan_versions",
    "server_from_args",
    "session_threads",
    "tensor_proto_to_numpy",
]
