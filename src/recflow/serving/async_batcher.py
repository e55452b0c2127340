"""The local model server's request batcher: forms batches on the asyncio event loop.

``AsyncBatcher`` is what the server uses (its gRPC service runs on an asyncio event loop); its
docstring says how it schedules. More than ``max_enqueued_batches * max_batch_size`` queued rows
are refused with :class:`recflow.errors.QueueFull` (UNAVAILABLE, as TF Serving's "batch
scheduling queue ... is full").

If a merged batch fails, its requests are re-run one by one, so one bad request cannot fail
the others it happened to be batched with. What a batch is (options, merging, padding) is
:mod:`recflow.serving.batching`.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

from recflow.errors import QueueFull
from recflow.serving.batching import BatchingOptions

T = TypeVar("T")
R = TypeVar("R")


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
    """Batches requests on the server's asyncio event loop.

    The queue lives on the event loop (no locks); batches run in ``executor`` so TensorFlow
    does not block the loop (but see lone requests below). While all ``num_batch_threads`` slots are busy, arrivals queue and
    the next free slot takes them together (up to ``options.max_execution_rows`` rows).

    When a slot is free, the batch waits up to ``batch_timeout_micros`` (from its oldest
    request) for more rows, as TF Serving does, but only while traffic is concurrent: most
    recent requests arrived while another was still in flight (``busy``, a moving average).
    A lone client in a closed loop never has company, so it is never delayed; under load the
    wait turns many one-row model calls (~400 us each on the bench model, almost all fixed
    cost) into fewer, larger ones.

    A lone one-row request (nothing else running, queued or in flight, ``busy`` below
    ``INLINE_BELOW``, the latest model call shorter than ``inline_max_seconds``) runs on the
    loop thread itself, as TF Serving runs an unbatched request on its gRPC thread: the
    executor's round trip costs more than a small model's call on a 2-vCPU guest (an empty
    function 75 us there; the toy model's Predict handler 0.40 ms around a 0.16 ms call; one
    gRPC client's p50 0.08-0.15 ms lower with it, in paired rounds against a server without it,
    2026-12-03). A request that arrives while such a call holds the loop counts as concurrent
    (submitted within half that call's time of its end), so under load every batch goes back
    to the executor and the loop stays free.

    Every wait is timed on the event loop's clock (``loop.time()``), so a test loop with a
    virtual clock decides each wait without sleeping.
    """

    # Share of recent requests that found another in flight, above which a batch waits.
    BUSY_THRESHOLD = 0.25
    _BUSY_ALPHA = 0.05  # moving-average weight of each new request (~20-request memory)
    # Below this share a lone request runs on the loop: one concurrent request (0.05) stops
    # that for the next ~30 requests.
    INLINE_BELOW = 0.01

    def __init__(
        self,
        run_batch: Callable[[Hashable, Sequence[T]], Sequence[R]],
        options: BatchingOptions,
        executor: Executor,
        *,
        on_batch: Callable[[int, int], None] | None = None,
        inline_max_seconds: float = 0.002,
    ) -> None:
        """``inline_max_seconds``: lone requests run on the loop only while model calls take
        less than this (it is how long every other RPC may wait for one); 0 never."""
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
        self._inline_max_seconds = inline_max_seconds
        self._last_call_seconds = 0.0  # the latest model call's duration (any thread)
        self._inline_end = float("-inf")  # loop time the latest call on the loop ended
        self._inline_seconds = 0.0  # and how long it took

    async def submit(self, key: Hashable, item: T, size: int) -> R:
        """Queue ``item`` (``size`` rows) and wait for its share of the batch result."""
        if self._queued_rows + size > self.options.max_enqueued_rows and self._queue:
            raise QueueFull(
                f"The batch scheduling queue is full ({self._queued_rows} rows waiting, "
                f"limit max_enqueued_batches*max_batch_size = "
                f"{self.options.max_enqueued_rows}); retry later or add capacity"
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        task: _AsyncTask[T, R] = _AsyncTask(key, item, size, loop.create_future(), now)
        waited_for_inline = now - self._inline_end < self._inline_seconds / 2
        concurrent = self._in_flight > 0 or waited_for_inline
        self.busy += self._BUSY_ALPHA * (concurrent - self.busy)
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
        full = self._queued_rows >= self.options.max_execution_rows
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
            if self._lone(batch):
                self._execute(batch, loop.time)
                self._inline_end = loop.time()
                self._inline_seconds = self._last_call_seconds
                self._complete(loop, batch, None)
                continue
            done = loop.run_in_executor(self._executor, self._execute, batch, loop.time)
            done.add_done_callback(functools.partial(self._finished, loop, batch))
        self._schedule(loop)  # what is left waits for the next slot or its own timeout

    def _lone(self, batch: list[_AsyncTask[T, R]]) -> bool:
        return (
            len(batch) == 1
            and batch[0].size == 1
            and self._running == 1
            and self._in_flight == 1
            and not self._queue
            and self.busy < self.INLINE_BELOW
            and self._last_call_seconds < self._inline_max_seconds
        )

    def _take_batch(self) -> list[_AsyncTask[T, R]]:
        """The oldest live task plus queued tasks with its key, up to max_execution_rows."""
        limit = self.options.max_execution_rows
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

    def _execute(self, batch: list[_AsyncTask[T, R]], clock: Callable[[], float]) -> None:
        """In an executor thread (on the loop for a lone request): fills each task's result
        or error (futures are set on the loop, because asyncio futures are not thread-safe),
        and times the call on ``clock`` (the loop's: virtual in tests)."""
        if not batch:
            return
        key = batch[0].key
        started = clock()
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
        self._last_call_seconds = clock() - started

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_AsyncTask[T, R]],
        done: asyncio.Future[None],
    ) -> None:
        crashed = done.exception() if not done.cancelled() else asyncio.CancelledError()
        self._complete(loop, batch, crashed)

    def _complete(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_AsyncTask[T, R]],
        crashed: BaseException | None,
    ) -> None:
        self._running -= 1
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
