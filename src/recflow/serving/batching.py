"""Server-side request batching for the local model server (TF Serving's BatchingParameters).

Concurrent Predict requests for the same model version, signature and inputs are merged along
their batch dimension (dim 0), run once, and the outputs are split back per request. The
scheduler is a leader/follower queue rather than TF Serving's separate batch threads:

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

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
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
