"""``recflow-model-server``: TF Serving's flags, the server built from them, and ``main``."""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.errors import ConfigError
from recflow.serving.batching import BatchingOptions
from recflow.serving.limits import (
    DEFAULT_MAX_REQUEST_ROWS,
    MAX_RECEIVE,
    RequestLimits,
    parse_grpc_channel_arguments,
)
from recflow.serving.server import allocator, onednn
from recflow.serving.server.manager import Loader
from recflow.serving.server.process import DEFAULT_BIND_ADDRESS, LocalModelServer
from recflow.serving.server.servable import Servable, ServableError, load_servable

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

log = logging.getLogger("recflow.serving.server")

BatchingValue = int | float | bool | str | list[int]


def parse_batching_parameters(text: str, *, source: str = "<text>") -> dict[str, BatchingValue]:
    """TF Serving's BatchingParameters text (its own schema, ``tfs_protos``): the fields set,
    wrapper values unwrapped (``{"max_batch_size": 128, "allowed_batch_sizes": [32, ...]}``).
    ConfigError names ``source`` and the problem when TF Serving would refuse the text."""
    from recflow.serving.tfs_protos import parse_batching_text

    return batching_fields(parse_batching_text(text, source=source))


def batching_fields(params: Message) -> dict[str, BatchingValue]:
    """The fields of a BatchingParameters message that are set, wrapper values unwrapped."""
    out: dict[str, BatchingValue] = {}
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
        "--malloc",
        choices=allocator.CHOICES,
        default="auto",
        help="recflow only: memory allocator; auto = jemalloc when installed (Debian "
        "libjemalloc2), else glibc's malloc, which kept growing under hot swaps "
        "(recflow.serving.server.allocator)",
    )
    p.add_argument(
        "--onednn",
        choices=onednn.CHOICES,
        default="auto",
        help="recflow only: TensorFlow's oneDNN custom ops; auto = as TF_ENABLE_ONEDNN_OPTS "
        "says when set, else off: with them on the server's memory grew with every new input "
        "shape and hot swap (recflow.serving.server.onednn)",
    )
    p.add_argument(
        "--native_frontend",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="recflow only: answer the common Predict (one user id, serving_default) in "
        "predictd, a C front end on --port with no Python on the request path, batched by the "
        "same parameters; every other request goes to the Python server behind it on a "
        "loopback port (recflow.serving.native; needs `make native-deps`)",
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
        help="TensorFlow ops run in parallel (0 = TensorFlow's choice, one per core; negative: "
        "every op in the thread that runs the batch, no hand-off; both thread flags reach the "
        "session only when one of them is positive, as in TF Serving's server.cc)",
    )
    return p


def session_threads(intra_op: int, inter_op: int) -> tuple[int, int]:
    """(intra, inter) op threads of each model's session from TF Serving's two flags, by its
    rule (model_servers/server.cc): both values reach the ConfigProto only when one of them is
    positive, else TensorFlow chooses (0, 0). So ``--tensorflow_inter_op_parallelism=-1``
    (TensorFlow's "run every op in the caller's thread") needs a positive intra-op count
    beside it; alone, TF Serving ignores it, and so does this server."""
    if intra_op > 0 or inter_op > 0:
        return intra_op, inter_op
    return 0, 0


def configure_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """Size the process's own (eager) thread pools from TF Serving's thread flags; only
    possible before TensorFlow runs anything. Sessions get :func:`session_threads`."""
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
    intra_op, inter_op = args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism
    configure_tensorflow_threads(intra_op, inter_op)
    threads = session_threads(intra_op, inter_op)
    if inter_op < 0 and threads == (0, 0):
        log.warning(
            "--tensorflow_inter_op_parallelism=%d is ignored without a positive "
            "--tensorflow_intra_op_parallelism (TF Serving's rule); sessions use TensorFlow's "
            "default thread pools",
            inter_op,
        )
    batching, limits = _batching_and_limits(args)
    grpc_options = parse_grpc_channel_arguments(args.grpc_channel_arguments)
    metrics_path = _metrics_path(args)
    config = _models(args)
    loader: Loader = functools.partial(load_servable, threads=threads)
    if args.load_delay_seconds > 0:
        loader = delayed_loader(args.load_delay_seconds, loader)
    return LocalModelServer(
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
        loader=loader,
        native_frontend=args.native_frontend,
        session_threads=threads,
    )


def _batching_and_limits(args: argparse.Namespace) -> tuple[BatchingOptions | None, RequestLimits]:
    """--enable_batching/--batching_parameters_file, and the rows one Predict may carry."""
    from recflow.serving import tfs_protos

    if args.enable_batching:
        if args.batching_parameters_file:
            params = tfs_protos.read_batching_parameters(args.batching_parameters_file)
            rows_from = f"max_batch_size of {args.batching_parameters_file}"
        else:
            params = tfs_protos.BatchingParameters()
            rows_from = "TF Serving's default max_batch_size (no --batching_parameters_file)"
        batching = BatchingOptions.from_proto(params)
        log.info("Batching Predict requests: %s", batching)
        return batching, RequestLimits(batching.max_batch_size, rows_from)
    if args.batching_parameters_file:  # TF Serving's own refusal (model_servers/server.cc)
        raise ConfigError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    return None, RequestLimits(args.max_request_rows, "--max_request_rows")


def _metrics_path(args: argparse.Namespace) -> str | None:
    """The Prometheus path of --monitoring_config_file, if it enables one."""
    from recflow.serving import tfs_protos

    if not args.monitoring_config_file:
        return None
    path = tfs_protos.prometheus_path(
        tfs_protos.read_monitoring_config(args.monitoring_config_file)
    )
    if path and args.rest_api_port <= 0:
        log.warning("monitoring config asks for Prometheus but --rest_api_port is 0; skipped")
    return path


def _models(args: argparse.Namespace) -> Path | ModelServerConfig:
    if args.model_config_file:  # wins over --model_name/--model_base_path, as in TF Serving
        return Path(args.model_config_file)
    if args.model_base_path:
        return _single_model_config(args.model_name, args.model_base_path)
    raise ConfigError(
        "no models to serve: pass --model_config_file <file> or --model_base_path <dir>"
    )


def delayed_loader(seconds: float, loader: Loader = load_servable) -> Loader:
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
    if argv is None:  # a program of its own (not a test calling main): it may re-execute
        try:
            allocator.reexec_if_needed(args.malloc, sys.argv[1:])
        except ConfigError as exc:
            log.error("recflow-model-server could not start: %s", exc)
            return 1
    log.info("memory allocator: %s", allocator.allocator_in_use())
    try:
        onednn.choose(args.onednn)
        # Logged before the server listens: whoever sees it ready can read the choice.
        log.info("TensorFlow oneDNN custom ops: %s", onednn.in_use())
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
        # A timeout keeps the main thread responsive to signals.
        while not shutdown.wait(0.5) and server.failure is None:
            pass
        server.stop()
    if server.failure is not None:
        log.error("recflow-model-server stopped: %s", server.failure)
        return 1
    log.info("recflow-model-server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
