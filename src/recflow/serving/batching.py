"""Server-side request batching for the local model server (TF Serving's BatchingParameters).

Concurrent Predict requests for the same model version, signature and inputs are merged along
their batch dimension (dim 0), run once, and the outputs are split back per request.

``AsyncBatcher`` is what the server uses (its gRPC service runs on an asyncio event loop); its
docstring says how it schedules. ``Batcher`` is the same contract for callers on threads, a
leader/follower queue rather than TF Serving's separate batch threads:

* a request thread that finds a free slot (``num_batch_threads`` slots) runs the batch itself,
  so a lone request never pays a thread hand-off and never waits for a timeout;
* while every slot is busy, requests queue up; the next free thread takes the oldest request
  and every queued request with the same key, up to ``max_batch_size`` rows;
* a batch that is not full waits at most ``batch_timeout_micros`` for more rows, and only while
  other requests have reached the server but are not queued yet (``arriving``): a lone client
  is never delayed, a burst is merged;
* more than ``max_enqueued_batches * max_batch_size`` queued rows are refused (UNAVAILABLE, as
  TF Serving's "batch scheduling queue ... is full").

If a merged batch fails, its requests are re-run one by one, so one bad request cannot fail
the others it happened to be batched with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar

from recflow.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The subset of TF Serving's BatchingParameters this scheduler uses."""

    max_batch_size: int = 64
    batch_timeout_micros: int = 1000
    num_batch_threads: int = 1
    max_enqueued_batches: int = 100

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"batching parameter {name}: expected an integer >= 1, found {value!r}"
                )
        if not isinstance(self.batch_timeout_micros, int) or self.batch_timeout_micros < 0:
            raise ConfigError(
                "batching parameter batch_timeout_micros: expected an integer >= 0, found "
                f"{self.batch_timeout_micros!r}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BatchingOptions:
        """From ``parse_batching_parameters`` output; fields this scheduler ignores are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in known})

    @classmethod
    def from_proto(cls, params: Any) -> BatchingOptions:
        """From a checked TF Serving ``BatchingParameters`` (``recflow.serving.tfs_protos``).

        ``max_batch_size`` unset means TF Serving's default (1000), so the request limit is the
        one TF Serving applies; the other unset fields keep this scheduler's defaults.
        ``allowed_batch_sizes`` (padding to fixed shapes) and ``pad_variable_length_inputs``
        are checked but not used: merged batches here run at their natural size.
        """
        from recflow.serving.tfs_protos import effective_max_batch_size

        values: dict[str, Any] = {"max_batch_size": effective_max_batch_size(params)}
        for name in ("batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
            if params.HasField(name):
                values[name] = int(getattr(params, name).value)
        return cls(**values)

    @property
    def max_enqueued_rows(self) -> int:
        return self.max_batch_size * self.max_enqueued_batches


class QueueFull(Exception):
    """More rows are waiting than ``max_enqueued_batches * max_batch_size``."""


class _Task(Generic[T, R]):
    __slots__ = ("key", "item", "size", "done", "result", "error")

    def __init__(self, key: Hashable, item: T, size: int) -> None:
        self.key = key
        self.item = item
        self.size = size
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class Batcher(Generic[T, R]):
    """``submit(key, item, size)`` returns ``run_batch(key, [items])[i]`` for this item.

    ``run_batch`` receives items sharing ``key`` (at most ``max_batch_size`` rows together,
    unless a single item is larger) and returns one result per item, in order. ``run_one`` is
    used to retry items one by one after a batch raised.
    """

    def __init__(
        self,
        run_batch: Callable[[Hashable, Sequence[T]], Sequence[R]],
        options: BatchingOptions,
        *,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.options = options
        self._on_batch = on_batch  # (requests, rows) per executed batch, for metrics
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Task[T, R]] = deque()
        self._queued_rows = 0
        self._running = 0
        self._arriving = 0
        self._timeout = options.batch_timeout_micros / 1e6

    # -- arrivals: requests that reached the server and will be submitted shortly ----------
    def arrive(self) -> None:
        with self._cond:
            self._arriving += 1

    def depart(self) -> None:
        """The arrived request will not be submitted (it failed validation)."""
        with self._cond:
            self._arriving -= 1
            self._cond.notify_all()

    # -- the queue ---------------------------------------------------------------------------
    def submit(self, key: Hashable, item: T, size: int, *, arrived: bool = False) -> R:
        task: _Task[T, R] = _Task(key, item, size)
        with self._cond:
            if arrived:
                self._arriving -= 1
            if self._queued_rows + size > self.options.max_enqueued_rows and self._queue:
                self._cond.notify_all()
                raise QueueFull(
                    f"The batch scheduling queue is full ({self._queued_rows} rows waiting, "
                    f"limit max_enqueued_batches*max_batch_size = "
                    f"{self.options.max_enqueued_rows}); retry later or add capacity"
                )
            self._queue.append(task)
            self._queued_rows += size
            self._cond.notify_all()
        while True:
            with self._cond:
                while not task.done and (
                    not self._queue or self._running >= self.options.num_batch_threads
                ):
                    self._cond.wait()
                if task.done:
                    break
                self._running += 1
                batch = self._take_batch()
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()
        if task.error is not None:
            raise task.error
        return task.result  # type: ignore[return-value]

    def _take_batch(self) -> list[_Task[T, R]]:
        """Called with the lock held: the oldest task plus queued tasks with its key."""
        first = self._queue.popleft()
        batch, rows = [first], first.size
        deadline = time.monotonic() + self._timeout
        while True:
            rows = self._gather(batch, rows)
            if rows >= self.options.max_batch_size or self._arriving <= 0:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Requests already inside the server will be queued within microseconds.
            self._cond.wait(remaining)
        self._queued_rows -= rows
        return batch

    def _gather(self, batch: list[_Task[T, R]], rows: int) -> int:
        key, limit = batch[0].key, self.options.max_batch_size
        if rows >= limit:
            return rows
        keep: deque[_Task[T, R]] = deque()
        while self._queue:
            task = self._queue.popleft()
            if task.key == key and rows + task.size <= limit:
                batch.append(task)
                rows += task.size
            else:
                keep.append(task)
        self._queue = keep
        return rows

    def _execute(self, batch: list[_Task[T, R]]) -> None:
        key = batch[0].key
        try:
            results = list(self._run_batch(key, [t.item for t in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
            for task, result in zip(batch, results, strict=True):
                task.result = result
        except BaseException as exc:  # noqa: BLE001 (re-raised in each waiting request)
            if len(batch) == 1:
                batch[0].error = exc
            else:  # one bad request must not fail the others: run them alone
                for task in batch:
                    try:
                        task.result = self._run_batch(key, [task.item])[0]
                    except BaseException as single:  # noqa: BLE001
                        task.error = single
        if self._on_batch is not None:
            self._on_batch(len(batch), sum(t.size for t in batch))
        with self._cond:
            for task in batch:
                task.done = True
            self._cond.notify_all()


class _AsyncTask(Generic[T, R]):
    __slots__ = ("key", "item", "size", "future", "queued_at", "result", "error")

    def __init__(
        self, key: Hashable, item: T, size: int, future: asyncio.Future[R], queued_at: float
    ) -> None:
        self.key = key
        self.queued_at = queued_at
        self.item = item
        self.size = size
        self.future = future
        self.result: R | None = None
        self.error: BaseException | None = None


class AsyncBatcher(Generic[T, R]):
    """The asyncio form of ``Batcher``, used by the server's event loop.

    The queue lives on the event loop (no locks); batches run in ``executor`` so TensorFlow
    never blocks the loop. While all ``num_batch_threads`` slots are busy, arrivals queue and
    the next free slot takes them together (up to ``max_batch_size`` rows).

    When a slot is free, the batch waits up to ``batch_timeout_micros`` (from its oldest
    request) for more rows, as TF Serving does, but only while traffic is concurrent: most
    recent requests arrived while another was still in flight (``busy``, a moving average).
    A lone client in a closed loop never has company, so it is never delayed; under load the
    wait turns many one-row model calls (~400 us each on the bench model, almost all fixed
    cost) into fewer, larger ones.
    """

    # Share of recent requests that found another in flight, above which a batch waits.
    BUSY_THRESHOLD = 0.25
    _BUSY_ALPHA = 0.05  # moving-average weight of each new request (~20-request memory)

    def __init__(
        self,
        run_batch: Callable[[Hashable, Sequence[T]], Sequence[R]],
        options: BatchingOptions,
        executor: Executor,
        *,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.options = options
        self._executor = executor
        self._on_batch = on_batch
        self._queue: deque[_AsyncTask[T, R]] = deque()
        self._queued_rows = 0
        self._running = 0
        self._in_flight = 0  # submitted and not answered yet
        self.busy = 0.0
        self._timeout = options.batch_timeout_micros / 1e6
        self._handle: asyncio.TimerHandle | None = None  # the pending dispatch, if any

    async def submit(self, key: Hashable, item: T, size: int) -> R:
        """Queue ``item`` (``size`` rows) and wait for its share of the batch result."""
        if self._queued_rows + size > self.options.max_enqueued_rows and self._queue:
            raise QueueFull(
                f"The batch scheduling queue is full ({self._queued_rows} rows waiting, "
                f"limit max_enqueued_batches*max_batch_size = "
                f"{self.options.max_enqueued_rows}); retry later or add capacity"
            )
        loop = asyncio.get_running_loop()
        task: _AsyncTask[T, R] = _AsyncTask(key, item, size, loop.create_future(), loop.time())
        self.busy += self._BUSY_ALPHA * ((self._in_flight > 0) - self.busy)
        self._in_flight += 1
        self._queue.append(task)
        self._queued_rows += size
        self._schedule(loop)
        try:
            return await task.future
        finally:
            self._in_flight -= 1

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arrange the next dispatch: now-ish, or at the oldest request's timeout."""
        if not self._queue or self._running >= self.options.num_batch_threads:
            return
        full = self._queued_rows >= self.options.max_batch_size
        if self._timeout > 0 and not full and self.busy >= self.BUSY_THRESHOLD:
            delay = self._queue[0].queued_at + self._timeout - loop.time()
        else:
            delay = 0.0
        if self._handle is not None:
            if delay > 0 or self._handle.when() <= loop.time():
                return  # already due at the right time (a full batch re-schedules as due now)
            self._handle.cancel()
        # Even "now" is one loop pass later (call_at in the past): calls the loop received in
        # the same pass are queued by then and join the batch.
        self._handle = loop.call_at(loop.time() + max(delay, 0.0), self._dispatch, loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        while self._queue and self._running < self.options.num_batch_threads:
            batch = self._take_batch()
            self._running += 1
            done = loop.run_in_executor(self._executor, self._execute, batch)
            done.add_done_callback(functools.partial(self._finished, loop, batch))
        self._schedule(loop)  # what is left waits for the next slot or its own timeout

    def _take_batch(self) -> list[_AsyncTask[T, R]]:
        """The oldest live task plus queued tasks with its key, up to max_batch_size rows."""
        limit = self.options.max_batch_size
        batch: list[_AsyncTask[T, R]] = []
        rows = 0
        keep: deque[_AsyncTask[T, R]] = deque()
        while self._queue:
            task = self._queue.popleft()
            if task.future.cancelled():  # the client went away while it waited
                self._queued_rows -= task.size
                continue
            if not batch or (task.key == batch[0].key and rows + task.size <= limit):
                batch.append(task)
                rows += task.size
                self._queued_rows -= task.size
            else:
                keep.append(task)
        self._queue = keep
        return batch

    def _execute(self, batch: list[_AsyncTask[T, R]]) -> None:
        """In an executor thread: fills each task's result or error (futures are set later,
        on the loop, because asyncio futures are not thread-safe)."""
        if not batch:
            return
        key = batch[0].key
        try:
            results = list(self._run_batch(key, [t.item for t in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
            for task, result in zip(batch, results, strict=True):
                task.result = result
        except Exception as exc:  # noqa: BLE001 (re-raised in each waiting request)
            if len(batch) == 1:
                batch[0].error = exc
            else:  # one bad request must not fail the others: run them alone
                for task in batch:
                    try:
                        task.result = self._run_batch(key, [task.item])[0]
                    except Exception as single:  # noqa: BLE001
                        task.error = single

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_AsyncTask[T, R]],
        done: asyncio.Future[None],
    ) -> None:
        self._running -= 1
        crashed = done.exception() if not done.cancelled() else asyncio.CancelledError()
        for task in batch:
            if task.future.done():  # cancelled by its caller meanwhile
                continue
            error = crashed or task.error
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(task.result)  # type: ignore[arg-type]
        if batch and self._on_batch is not None:
            self._on_batch(len(batch), sum(t.size for t in batch))
        self._schedule(loop)
