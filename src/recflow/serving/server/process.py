"""The server process: ``LocalModelServer`` runs gRPC on its own event loop thread, the model
and reload thread pools, the metrics port, and the file-system and config-file pollers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.errors import ConfigError
from recflow.serving.batching import BatchingOptions
from recflow.serving.limits import MAX_RECEIVE, RequestLimits, server_options
from recflow.serving.server.grpc_services import add_services
from recflow.serving.server.manager import Loader, ModelManager
from recflow.serving.server.metrics_http import host_port, start_metrics
from recflow.serving.server.servable import ServableError, load_servable

if TYPE_CHECKING:
    import grpc
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    from recflow.serving.native import NativeFrontend

log = logging.getLogger("recflow.serving.server")

# The local server answers on this machine only unless told otherwise (--bind_address);
# TF Serving binds every interface, which a container needs and a laptop should not do.
DEFAULT_BIND_ADDRESS = "127.0.0.1"
LOOPBACK = "127.0.0.1"


class LocalModelServer:
    """gRPC PredictionService + ModelService over a ModelManager, with the polling loops.

    ``config`` is the model config file (re-read when ``model_config_file_poll_wait_seconds``
    > 0) or a ModelServerConfig. ``start()`` loads the initial config before opening the port,
    as TF Serving does; it raises ServableError if that fails. ``loader`` loads one version
    (``load_servable``; ``--load_delay_seconds`` wraps it, tests pass fakes).
    ``native_frontend``: predictd takes ``host:port`` and this server listens behind it on a
    loopback port (``backend_port``); ``session_threads`` are its sessions' (intra, inter).
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
        loader: Loader = load_servable,
        native_frontend: bool = False,
        session_threads: tuple[int, int] = (0, 0),
    ) -> None:
        self.manager = ModelManager(
            allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
            loader=loader,
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
        self._native = native_frontend
        self._session_threads = session_threads
        self._frontend: NativeFrontend | None = None
        self.failure: str | None = None  # why the server stopped on its own, if it did
        self.backend_port = 0  # the Python gRPC server's port behind the native front end
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
        # Behind the native front end the Python server listens on loopback only, at a port
        # of the system's choice; predictd takes the public address.
        host, port = (LOOPBACK, 0) if self._native else (self.host, self._port)
        try:
            self.port = asyncio.run_coroutine_threadsafe(
                self._start_grpc(host, port), loop
            ).result()
        except BaseException:
            self._close_loop()
            raise
        if self._rest_port > 0 and self._metrics_path:
            self._http = start_metrics(self.manager, self.host, self._rest_port, self._metrics_path)
            log.info(
                "Exporting metrics at http://%s%s",
                host_port(self.host, self._rest_port),
                self._metrics_path,
            )
        self._poller = threading.Thread(target=self._poll_loop, name="poll", daemon=True)
        self._poller.start()
        if self._native:  # last: once its public port answers, everything else is up
            try:
                self._start_frontend()
            except BaseException:
                self.stop()
                raise
        log.info("Running gRPC ModelServer at %s ...", host_port(self.host, self.port))
        log.info(
            "Request limits: %d rows (%s), %d bytes per message (%s)",
            self.limits.max_rows,
            self.limits.rows_from,
            self.limits.max_receive_bytes,
            MAX_RECEIVE,
        )
        return self

    def _start_frontend(self) -> None:
        from recflow.serving.native import NativeFrontend

        self.backend_port = self.port
        frontend = NativeFrontend(
            host_port(self.host, self._port),
            host_port(LOOPBACK, self.backend_port),
            max_receive_bytes=self.limits.max_receive_bytes,
            batching=self.batching,
            threads=self._max_workers,
            session_threads=self._session_threads,
            on_exit=self._frontend_exited,
        )
        self._frontend = frontend
        frontend.start()
        self.manager.set_listener(frontend.publish)
        self.port = frontend.listen()  # with its table: from the first request on, as fast
        self.manager.metrics.add_source(frontend.drain_into)
        log.info(
            "Native front end (predictd) at %s; the Python server behind it at %s",
            host_port(self.host, self.port),
            host_port(LOOPBACK, self.backend_port),
        )

    def _frontend_exited(self, message: str) -> None:
        self.failure = message
        self._stop.set()

    async def _start_grpc(self, host: str, port: int) -> int:
        import grpc

        assert self._model_pool is not None and self._admin_pool is not None
        # gRPC's own 4 MiB receive limit unless --grpc_channel_arguments says otherwise (TF
        # Serving lifts it to 2 GiB; here a bounded request is the point, see limits.py).
        server = grpc.aio.server(options=self._grpc_options)
        add_services(
            server, self.manager, self._model_pool, self._admin_pool, self.batching, self.limits
        )
        try:
            bound = server.add_insecure_port(host_port(host, port))
        except RuntimeError:  # grpcio raises where older versions returned 0
            bound = 0
        if bound == 0:
            raise OSError(
                f"could not bind gRPC to {host_port(host, port)}; is another server "
                "using the port, or is the address not one of this machine's?"
            )
        await server.start()
        self._grpc = server
        return int(bound)

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
        self.manager.set_listener(None)
        if self._frontend is not None:
            self._frontend.stop()
            self._frontend = None
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
