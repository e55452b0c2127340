"""predictd as a process: started on the server's public address, its table kept in step with
the model manager, its counts drained into the server's metrics.

The protocol is predictd's standard input and output (servables.h, stats.h): one command at a
time under a lock, each answered before the next is sent. predictd exits when its standard input
closes, so it never outlives the server that started it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from recflow.errors import ConfigError
from recflow.serving.metrics import LATENCY_BUCKETS_US
from recflow.serving.native.build import predictd_binary, tensorflow_library
from recflow.serving.server.servable import DEFAULT_SIGNATURE

if TYPE_CHECKING:
    from recflow.serving.batching import BatchingOptions
    from recflow.serving.metrics import ServingMetrics
    from recflow.serving.server.servable import Servable

log = logging.getLogger("recflow.serving.native")

MAX_OUTPUTS = 16  # servables.h
DT_STRING = 7  # tensorflow.DataType


def native_tensors(servable: Servable) -> tuple[str, list[str]] | None:
    """``serving_default``'s input and outputs as predictd's KEY=OP:INDEX fields, when predictd
    can serve it: one rank-1 string input (a user id per row) and outputs batched along
    dimension 0. None: every request for this version goes to the Python server."""
    sig = servable.signature_defs.get(DEFAULT_SIGNATURE)
    if sig is None or len(sig.inputs) != 1 or not 0 < len(sig.outputs) <= MAX_OUTPUTS:
        return None
    (key, tensor), *_ = sig.inputs.items()
    shape = tensor.tensor_shape
    if tensor.dtype != DT_STRING or shape.unknown_rank or [d.size for d in shape.dim] != [-1]:
        return None
    for out in sig.outputs.values():
        dims = out.tensor_shape.dim
        if out.tensor_shape.unknown_rank or not dims or dims[0].size != -1 or len(dims) > 8:
            return None
    return f"{key}={tensor.name}", [f"{k}={t.name}" for k, t in sorted(sig.outputs.items())]


def table_lines(
    servables: Sequence[Servable], labels: Mapping[str, Mapping[str, int]]
) -> list[str]:
    """predictd's table for these versions and labels; a field holding a tab or line feed
    cannot be sent, so such a version or label is left to the Python server."""

    def plain(*fields: object) -> bool:
        return not any(c in str(f) for f in fields for c in "\t\n")

    lines = []
    for s in sorted(servables, key=lambda s: (s.name, s.version)):
        if not plain(s.name):
            continue
        tensors = native_tensors(s)
        if tensors is None or not plain(s.path, *tensors[1], tensors[0]):
            lines.append(f"servable\t{s.name}\t{s.version}\t-")
        else:
            fields = [s.name, str(s.version), str(s.path.resolve()), tensors[0], *tensors[1]]
            lines.append("\t".join(["servable", *fields]))
    for name, by_label in sorted(labels.items()):
        for label, version in sorted(by_label.items()):
            if plain(name, label):
                lines.append(f"label\t{name}\t{label}\t{version}")
    return lines


class NativeFrontend:
    """predictd on ``address`` in front of the Python server at ``backend``.

    With ``batching`` its native requests are merged as the Python server's batcher merges them
    (``num_batch_threads`` batches at a time, up to the largest allowed size, padded to the
    allowed sizes, ``max_enqueued_batches * max_batch_size`` waiting); without, each runs alone
    on one of ``threads`` threads. ``session_threads``: (intra, inter) op threads of its
    sessions, by TF Serving's rule as the Python server's (``session_threads`` of
    recflow.serving.server.cli). ``on_exit`` is called if predictd ends on its own.
    """

    def __init__(
        self,
        address: str,
        backend: str,
        *,
        max_receive_bytes: int,
        batching: BatchingOptions | None,
        threads: int,
        session_threads: tuple[int, int] = (0, 0),
        binary: Path | None = None,
        on_exit: Callable[[str], None] | None = None,
    ) -> None:
        self._address = address
        self._backend = backend
        self._max_receive = max_receive_bytes
        self._batching = batching
        self._threads = threads
        self._session_threads = session_threads
        self._binary = binary
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._published: list[str] | None = None
        self._stopping = False
        self.port = 0

    def argv(self, binary: Path) -> list[str]:
        b = self._batching
        if b is not None:
            workers, rows, queued = b.num_batch_threads, b.max_execution_rows, b.max_enqueued_rows
            pad = ",".join(map(str, b.allowed_batch_sizes)) or "-"
        else:
            workers, rows, queued, pad = self._threads, 1, self._threads, "-"
        bounds = ",".join(map(str, LATENCY_BUCKETS_US))
        return [str(binary), self._address, self._backend, str(self._max_receive), str(workers),
                str(rows), str(queued), pad, bounds]  # fmt: skip

    def start(self) -> None:
        """Start predictd, not yet listening: ``publish`` its first table, then ``listen``."""
        binary = self._binary or predictd_binary()
        library = tensorflow_library()
        env = dict(os.environ, TF_CC_LIB=str(library), LD_LIBRARY_PATH=str(library.parent))
        # Without the server's preloaded allocator (jemalloc, recflow.serving.server.allocator):
        # TensorFlow's library is opened with RTLD_DEEPBIND (servables.c), so it would take
        # glibc's malloc while predictd and gRPC took the preloaded one, and memory allocated
        # by one and freed by the other crashes predictd (seen at its start: SIGSEGV).
        env.pop("LD_PRELOAD", None)
        intra, inter = self._session_threads
        env["PREDICTD_SESSION_THREADS"] = f"{intra},{inter}"
        self._process = subprocess.Popen(self.argv(binary), env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
        threading.Thread(
            target=self._watch, args=(self._process,), name="predictd-watch", daemon=True
        ).start()

    def listen(self) -> int:
        """Open the public address; returns its port. ConfigError if it cannot be bound."""
        with self._lock:
            answer = self._command(["listen"], _is_answer_or_listening)[-1]
        if not answer.startswith("listening"):
            raise ConfigError(
                f"predictd could not listen on {self._address} ({answer}); is another server "
                "using the port, or is the address not one of this machine's?"
            )
        self.port = int(answer.split()[1])
        return self.port

    def _watch(self, process: subprocess.Popen[str]) -> None:
        code = process.wait()
        if not self._stopping:
            message = f"predictd exited on its own (exit {code}); the public port is closed"
            log.error(message)
            if self._on_exit is not None:
                self._on_exit(message)

    def _command(self, lines: Sequence[str], last: Callable[[str], bool]) -> list[str]:
        """Send ``lines``; the answer lines up to and including the one ``last`` accepts."""
        process = self._process
        if process is None or process.poll() is not None:
            raise ConfigError("predictd is not running")
        stdin, stdout = process.stdin, process.stdout
        assert stdin is not None and stdout is not None
        return _exchange(stdin, stdout, lines, last)

    def publish(
        self, servables: Sequence[Servable], labels: Mapping[str, Mapping[str, int]]
    ) -> None:
        """Make these versions and labels predictd's whole table; returns once requests see
        it. A version predictd cannot load is forwarded (its warning is logged); should the
        table itself be refused, predictd is emptied so that every request is forwarded rather
        than answered from a stale table."""
        lines = table_lines(servables, labels)
        with self._lock:
            if lines == self._published:
                return
            answer = self._command([*lines, "commit"], _is_answer)
            for warning in answer[:-1]:
                log.warning("predictd: %s", warning.removeprefix("warning "))
            if not answer[-1].startswith("ok"):
                log.error("predictd refused its table (%s); forwarding every request", answer[-1])
                self._command(["commit"], _is_answer)
                lines = []
            self._published = lines

    def drain_into(self, metrics: ServingMetrics) -> None:
        """Add what predictd served since the last drain to ``metrics``."""
        import grpc

        names = {code.value[0]: code.name for code in grpc.StatusCode}
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                return
            lines = self._command(["stats"], lambda line: line == "end")
        for line in lines[:-1]:
            kind, *fields = line.split("\t")
            if kind == "count":
                model, code, n = fields
                metrics.add_counts(model, "Predict", names.get(int(code), code), int(n))
            elif kind == "latency":
                model, total_us, buckets = fields
                counts = [int(c) for c in buckets.split(",")]
                metrics.add_latency(model, "Predict", counts, float(total_us))
            elif kind == "batch":
                rows, batches = (int(f) for f in fields)
                metrics.add_batches(rows, batches)

    def stop(self) -> None:
        self._stopping = True
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        with contextlib.suppress(OSError):  # a predictd that died already closed it
            process.stdin.close()  # predictd exits when its standard input closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _is_answer(line: str) -> bool:
    return line.startswith(("ok", "error"))


def _is_answer_or_listening(line: str) -> bool:
    return line.startswith(("listening", "error"))


def _exchange(
    stdin: IO[str], stdout: IO[str], lines: Sequence[str], last: Callable[[str], bool]
) -> list[str]:
    stdin.write("".join(f"{line}\n" for line in lines))
    stdin.flush()
    answer = []
    while True:
        line = stdout.readline()
        if not line:
            raise ConfigError("predictd closed its output (it exited); see the server log")
        answer.append(line.rstrip("\n"))
        if last(answer[-1]):
            return answer
