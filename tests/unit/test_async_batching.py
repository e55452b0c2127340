"""The asyncio batcher used by the model server: merging, splitting, failures, waiting.

No outcome depends on timing. The event loop's clock is virtual: it moves only when nothing
is ready to run, straight to the next timer, so "waited for the batch timeout" and "did not
wait" are read off ``loop.time()``. Model calls run in an executor the test drives: at once,
or held until the test releases them.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine, Hashable, Sequence
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from recflow.errors import QueueFull
from recflow.serving.async_batcher import AsyncBatcher
from recflow.serving.batching import BatchingOptions

T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer instead of sleeping until it."""

    def __init__(self) -> None:
        self.now = 0.0
        loop = self

        class Selector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
            def select(self, timeout: float | None = None) -> Any:
                if timeout is not None and timeout > 0:
                    loop.now += timeout  # nothing is ready before the next timer: go there
                    timeout = 0
                return super().select(timeout)

        super().__init__(Selector())

    def time(self) -> float:
        return self.now


class DrivenExecutor(Executor):
    """Runs each call at once, or, while ``held``, keeps it until ``release()``."""

    def __init__(self) -> None:
        self.held = False
        self.submitted = 0
        self.pending: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        future: Future[Any] = Future()
        self.pending.append((future, fn, args))
        if not self.held:
            self.release()
        return future

    def release(self) -> None:
        self.held = False
        while self.pending:
            future, fn, args = self.pending.pop(0)
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 (handed to the waiting request)
                future.set_exception(exc)


class Model:
    """Doubles numbers; records every batch. Each call takes ``seconds`` of the virtual
    clock of ``loop`` when one is given."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[tuple[Hashable, list[int]]] = []
        self.seconds = seconds
        self.loop: VirtualTimeLoop | None = None

    def __call__(self, key: Hashable, items: Sequence[list[int]]) -> list[list[int]]:
        if self.loop is not None:
            self.loop.now += self.seconds
        flat = [x for item in items for x in item]
        if -1 in flat:
            raise ValueError("bad input -1")
        self.batches.append((key, flat))
        out, start = [], 0
        for item in items:
            out.append([2 * x for x in flat[start : start + len(item)]])
            start += len(item)
        return out


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> tuple[T, float]:
    """``main()`` on a virtual-time loop; its result and the virtual seconds it took."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main()), loop.time()
    finally:
        loop.close()


def test_lone_request_is_not_delayed_by_the_timeout() -> None:
    model = Model()
    batcher = AsyncBatcher(model, BatchingOptions(batch_timeout_micros=2_000_000),
                           DrivenExecutor())  # fmt: skip

    async def main() -> list[list[int]]:
        # a closed loop: never another request in flight
        return [await batcher.submit("m", [i], 1) for i in range(5)]

    results, elapsed = run(main)
    assert results == [[2 * i] for i in range(5)]
    assert elapsed == 0.0  # no 2 s timeout waited
    assert batcher.busy == 0.0
    assert [flat for _, flat in model.batches] == [[i] for i in range(5)]


def test_concurrent_requests_merge_by_key_and_split_back() -> None:
    model = Model()
    sizes: list[tuple[int, int]] = []
    options = BatchingOptions(max_batch_size=8, num_batch_threads=1, batch_timeout_micros=0)
    batcher = AsyncBatcher(model, options, DrivenExecutor(),
                           on_batch=lambda n, r: sizes.append((n, r)))  # fmt: skip
    jobs = [("a" if i % 3 else "b", [i, i + 100]) for i in range(12)]

    async def main() -> list[object]:
        return list(await asyncio.gather(*(batcher.submit(k, v, 2) for k, v in jobs)))

    results, elapsed = run(main)
    assert results == [[2 * x for x in item] for _, item in jobs]
    # the oldest request's key first, then the next oldest; at most 8 rows each
    assert model.batches == [
        ("b", [0, 100, 3, 103, 6, 106, 9, 109]),
        ("a", [1, 101, 2, 102, 4, 104, 5, 105]),
        ("a", [7, 107, 8, 108, 10, 110, 11, 111]),
    ]
    assert sizes == [(4, 8)] * 3 and elapsed == 0.0


def test_a_bad_request_fails_alone() -> None:
    model = Model()
    batcher = AsyncBatcher(model, BatchingOptions(num_batch_threads=1), DrivenExecutor())
    jobs = [[i] for i in range(6)] + [[-1]] + [[i] for i in range(6, 9)]

    async def main() -> list[object]:
        calls = (batcher.submit("m", v, 1) for v in jobs)
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results, _ = run(main)
    assert isinstance(results[6], ValueError)
    assert [r for i, r in enumerate(results) if i != 6] == [[2 * v[0]] for v in jobs if v != [-1]]
    # the merged batch raised; the requests then ran one by one
    assert [flat for _, flat in model.batches] == [v for v in jobs if v != [-1]]


def test_queue_limit_refuses_with_queue_full() -> None:
    model = Model()
    options = BatchingOptions(max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1)
    batcher = AsyncBatcher(model, options, DrivenExecutor())

    async def main() -> list[object]:
        calls = (batcher.submit("m", [i], 1) for i in range(8))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results, _ = run(main)
    # all eight arrive in the same loop pass: 2 rows fit the queue (1 batch x 2 rows)
    assert results[:2] == [[0], [2]]
    assert all(isinstance(r, QueueFull) and "queue is full" in str(r) for r in results[2:])
    assert {r.code for r in results[2:] if isinstance(r, QueueFull)} == {"UNAVAILABLE"}


def test_busy_traffic_waits_for_the_timeout_and_merges() -> None:
    def five_requests_10ms_apart(busy: float) -> tuple[list[list[int]], float]:
        model = Model()
        options = BatchingOptions(max_batch_size=64, batch_timeout_micros=200_000,
                                  num_batch_threads=4)  # fmt: skip
        batcher = AsyncBatcher(model, options, DrivenExecutor())
        batcher.busy = busy  # as measured under load (or not)

        async def later(i: int) -> list[int]:
            await asyncio.sleep(0.01 * i)
            return await batcher.submit("m", [i], 1)

        async def main() -> list[list[int]]:
            return list(await asyncio.gather(*(later(i) for i in range(5))))

        results, elapsed = run(main)
        assert results == [[2 * i] for i in range(5)]
        return [flat for _, flat in model.batches], elapsed

    # Busy: the first request's batch waits its 200 ms and takes the four after it.
    batches, elapsed = five_requests_10ms_apart(busy=1.0)
    assert batches == [[0, 1, 2, 3, 4]] and elapsed == 0.2
    # Not busy: nobody waits; each runs as it comes.
    batches, elapsed = five_requests_10ms_apart(busy=0.0)
    assert batches == [[0], [1], [2], [3], [4]] and elapsed == 0.04


def test_a_full_batch_does_not_wait() -> None:
    model = Model()
    options = BatchingOptions(max_batch_size=4, batch_timeout_micros=5_000_000)
    batcher = AsyncBatcher(model, options, DrivenExecutor())
    batcher.busy = 1.0  # as if under load: a batch would wait up to 5 s unless full

    async def main() -> None:
        await asyncio.gather(*(batcher.submit("m", [i], 1) for i in range(4)))

    _, elapsed = run(main)
    assert [flat for _, flat in model.batches] == [[0, 1, 2, 3]] and elapsed == 0.0


def test_batches_gather_at_most_the_largest_allowed_size() -> None:
    model = Model()
    options = BatchingOptions(max_batch_size=4, allowed_batch_sizes=(1, 2, 4),
                              num_batch_threads=1, batch_timeout_micros=0)  # fmt: skip
    batcher = AsyncBatcher(model, options, DrivenExecutor())

    async def main() -> None:
        await asyncio.gather(*(batcher.submit("m", [i], 1) for i in range(6)))

    run(main)
    assert [flat for _, flat in model.batches] == [[0, 1, 2, 3], [4, 5]]


def test_a_cancelled_request_is_dropped_and_the_rest_answered() -> None:
    model = Model()
    executor = DrivenExecutor()
    # never on the loop: the first request must wait in the executor the test holds
    batcher = AsyncBatcher(model, BatchingOptions(num_batch_threads=1), executor,
                           inline_max_seconds=0)  # fmt: skip

    async def main() -> list[object]:
        executor.held = True
        first = asyncio.ensure_future(batcher.submit("m", [1], 1))
        while not executor.pending:  # the first batch is in the executor; the slot is busy
            await asyncio.sleep(0)
        gone = asyncio.ensure_future(batcher.submit("m", [2], 1))
        kept = asyncio.ensure_future(batcher.submit("m", [3], 1))
        await asyncio.sleep(0)  # both queued behind the running batch
        gone.cancel()
        executor.release()
        return [await first, await kept]

    results, _ = run(main)
    assert results == [[2], [6]]
    assert [flat for _, flat in model.batches] == [[1], [3]]


def test_a_lone_one_row_request_runs_on_the_loop_and_others_in_the_executor() -> None:
    model = Model()
    executor = DrivenExecutor()
    batcher = AsyncBatcher(model, BatchingOptions(num_batch_threads=1), executor)

    async def main() -> list[object]:
        lone = [await batcher.submit("m", [i], 1) for i in range(3)]
        two_rows = await batcher.submit("m", [5, 6], 2)
        together = await asyncio.gather(*(batcher.submit("m", [i], 1) for i in range(2)))
        return [lone, two_rows, list(together)]

    results, _ = run(main)
    assert results == [[[0], [2], [4]], [10, 12], [[0], [2]]]
    # the three lone calls never reached the executor; the two-row one and the pair did
    assert executor.submitted == 2


def test_a_request_that_waited_for_a_call_on_the_loop_sends_the_next_ones_to_the_executor() -> None:
    model = Model(seconds=0.001)  # each call holds the loop 1 ms of virtual time
    executor = DrivenExecutor()
    batcher = AsyncBatcher(model, BatchingOptions(num_batch_threads=1), executor)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        model.loop = loop
        arrived: asyncio.Future[None] = loop.create_future()

        async def during_the_call() -> None:  # due while the first call runs on the loop
            await batcher.submit("m", [1], 1)
            arrived.set_result(None)

        loop.call_at(loop.time() + 0.0005, lambda: asyncio.ensure_future(during_the_call()))
        await batcher.submit("m", [0], 1)
        await arrived
        # the first ran on the loop; the one that waited for it counts as concurrent
        assert executor.submitted == 1
        await batcher.submit("m", [2], 1)

    run(main)
    assert batcher.busy >= batcher.INLINE_BELOW
    assert executor.submitted == 2  # and so does the next lone request


def test_after_a_slow_model_call_lone_requests_leave_the_loop() -> None:
    model = Model(seconds=0.005)  # longer than inline_max_seconds
    executor = DrivenExecutor()
    batcher = AsyncBatcher(model, BatchingOptions(num_batch_threads=1), executor,
                           inline_max_seconds=0.002)  # fmt: skip

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        model.loop = loop
        for i in range(3):
            await batcher.submit("m", [i], 1)

    run(main)
    # the first call ran on the loop and took 5 ms; the two after it went to the executor
    assert executor.submitted == 2
