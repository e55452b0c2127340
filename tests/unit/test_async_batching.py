"""The asyncio batcher used by the model server: merging, splitting, failures, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from recflow.serving.batching import AsyncBatcher, BatchingOptions, QueueFull

T = TypeVar("T")


class Model:
    """Doubles numbers after ``delay`` seconds (in the executor); records every batch."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.batches: list[tuple[Hashable, list[int]]] = []

    def __call__(self, key: Hashable, items: Sequence[list[int]]) -> list[list[int]]:
        flat = [x for item in items for x in item]
        if -1 in flat:
            raise ValueError("bad input -1")
        self.batches.append((key, flat))
        time.sleep(self.delay)
        out, start = [], 0
        for item in items:
            out.append([2 * x for x in flat[start : start + len(item)]])
            start += len(item)
        return out


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def test_lone_request_is_not_delayed_by_the_timeout(pool: ThreadPoolExecutor) -> None:
    model = Model(delay=0)
    batcher = AsyncBatcher(model, BatchingOptions(batch_timeout_micros=2_000_000), pool)

    async def main() -> float:
        started = time.perf_counter()
        for i in range(5):  # a closed loop: never another request in flight
            assert await batcher.submit("m", [i], 1) == [2 * i]
        return time.perf_counter() - started

    assert run(main) < 1.0  # no 2 s timeout waited
    assert batcher.busy == 0.0


def test_concurrent_requests_merge_by_key_and_split_back(pool: ThreadPoolExecutor) -> None:
    model = Model()
    sizes: list[tuple[int, int]] = []
    options = BatchingOptions(max_batch_size=8, num_batch_threads=1, batch_timeout_micros=0)
    batcher = AsyncBatcher(model, options, pool, on_batch=lambda n, r: sizes.append((n, r)))
    jobs = [("a" if i % 3 else "b", [i, i + 100]) for i in range(12)]

    async def main() -> list[object]:
        return list(await asyncio.gather(*(batcher.submit(k, v, 2) for k, v in jobs)))

    assert run(main) == [[2 * x for x in item] for _, item in jobs]
    assert max(len(flat) for _, flat in model.batches) > 2  # merged
    assert all(len(flat) <= 8 for _, flat in model.batches)
    for key, flat in model.batches:
        assert {("a" if (x % 100) % 3 else "b") for x in flat} == {key}
    assert sum(rows for _, rows in sizes) == 24 and len(sizes) == len(model.batches)


def test_a_bad_request_fails_alone(pool: ThreadPoolExecutor) -> None:
    model = Model()
    batcher = AsyncBatcher(model, BatchingOptions(num_batch_threads=1), pool)
    jobs = [[i] for i in range(6)] + [[-1]] + [[i] for i in range(6, 9)]

    async def main() -> list[object]:
        calls = (batcher.submit("m", v, 1) for v in jobs)
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results = run(main)
    assert isinstance(results[6], ValueError)
    assert [r for i, r in enumerate(results) if i != 6] == [[2 * v[0]] for v in jobs if v != [-1]]


def test_queue_limit_refuses_with_queue_full(pool: ThreadPoolExecutor) -> None:
    model = Model(delay=0.2)
    options = BatchingOptions(max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1)
    batcher = AsyncBatcher(model, options, pool)

    async def main() -> list[object]:
        calls = (batcher.submit("m", [i], 1) for i in range(8))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results = run(main)
    refused = [r for r in results if isinstance(r, QueueFull)]
    assert refused and "queue is full" in str(refused[0])
    assert any(r == [0] for r in results)  # the first ones were served


def test_busy_traffic_waits_for_the_timeout_and_merges(pool: ThreadPoolExecutor) -> None:
    model = Model(delay=0.001)
    options = BatchingOptions(max_batch_size=64, batch_timeout_micros=200_000, num_batch_threads=4)
    batcher = AsyncBatcher(model, options, pool)

    async def main() -> None:
        # Overlapping traffic first, so the batcher sees a busy server...
        await asyncio.gather(*(batcher.submit("m", [i], 1) for i in range(40)))
        assert batcher.busy >= AsyncBatcher.BUSY_THRESHOLD
        model.batches.clear()

        # ...then requests 10 ms apart: without the wait each would run alone.
        async def later(i: int) -> list[int]:
            await asyncio.sleep(0.01 * i)
            return await batcher.submit("m", [i], 1)

        assert await asyncio.gather(*(later(i) for i in range(5))) == [[2 * i] for i in range(5)]

    run(main)
    assert [flat for _, flat in model.batches] == [[0, 1, 2, 3, 4]]


def test_a_full_batch_does_not_wait(pool: ThreadPoolExecutor) -> None:
    model = Model(delay=0)
    options = BatchingOptions(max_batch_size=4, batch_timeout_micros=5_000_000)
    batcher = AsyncBatcher(model, options, pool)
    batcher.busy = 1.0  # as if under load: a batch would wait up to 5 s unless full

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(batcher.submit("m", [i], 1) for i in range(4)))
        return time.perf_counter() - started

    assert run(main) < 2.0
    assert [flat for _, flat in model.batches] == [[0, 1, 2, 3]]


def test_a_cancelled_request_is_dropped_and_the_rest_answered(pool: ThreadPoolExecutor) -> None:
    model = Model(delay=0.05)
    batcher = AsyncBatcher(model, BatchingOptions(num_batch_threads=1), pool)

    async def main() -> list[object]:
        first = asyncio.ensure_future(batcher.submit("m", [1], 1))
        await asyncio.sleep(0.01)  # the first batch is running; these two queue
        gone = asyncio.ensure_future(batcher.submit("m", [2], 1))
        kept = asyncio.ensure_future(batcher.submit("m", [3], 1))
        await asyncio.sleep(0)
        gone.cancel()
        return [await first, await kept]

    assert run(main) == [[2], [6]]
    assert [flat for _, flat in model.batches] == [[1], [3]]
