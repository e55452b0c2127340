"""The request batcher: merging, splitting, isolation of failures, queue limit, options."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence

import pytest

from recflow.errors import ConfigError
from recflow.serving.batching import Batcher, BatchingOptions, QueueFull


class Model:
    """Doubles numbers; slow enough that concurrent requests pile up; records batch sizes."""

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
        for item in items:  # split the merged result back per request
            out.append([2 * x for x in flat[start : start + len(item)]])
            start += len(item)
        return out


def run_concurrently(batcher: Batcher, jobs: list[tuple[str, list[int]]]) -> list[object]:
    results: list[object] = [None] * len(jobs)

    def one(i: int, key: str, item: list[int]) -> None:
        try:
            results[i] = batcher.submit(key, item, len(item))
        except Exception as exc:  # noqa: BLE001 (the test inspects it)
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i, k, v)) for i, (k, v) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_lone_request_runs_at_once_without_waiting_for_the_timeout() -> None:
    model = Model(delay=0)
    batcher = Batcher(model, BatchingOptions(batch_timeout_micros=2_000_000))
    started = time.perf_counter()
    assert batcher.submit("m", [1, 2], 2) == [2, 4]
    assert time.perf_counter() - started < 0.5  # no 2 s timeout: nobody else was arriving


def test_concurrent_requests_are_merged_by_key_and_split_back() -> None:
    model = Model()
    sizes: list[tuple[int, int]] = []
    batcher = Batcher(model, BatchingOptions(max_batch_size=8),
                      on_batch=lambda n, rows: sizes.append((n, rows)))  # fmt: skip
    jobs = [("a" if i % 3 else "b", [i, i + 100]) for i in range(12)]
    results = run_concurrently(batcher, jobs)
    assert results == [[2 * x for x in item] for _, item in jobs]  # each got its own rows
    assert max(len(flat) for _, flat in model.batches) > 2  # some requests were merged
    assert all(len(flat) <= 8 for _, flat in model.batches)  # never above max_batch_size
    for key, flat in model.batches:  # a batch holds one key only
        assert {("a" if (x % 100) % 3 else "b") for x in flat} == {key}
    assert sum(rows for _, rows in sizes) == 24 and len(sizes) == len(model.batches)


def test_a_bad_request_fails_alone() -> None:
    model = Model()
    batcher = Batcher(model, BatchingOptions(max_batch_size=64, num_batch_threads=1))
    jobs = [("m", [i]) for i in range(6)] + [("m", [-1])] + [("m", [i]) for i in range(6, 9)]
    results = run_concurrently(batcher, jobs)
    assert isinstance(results[6], ValueError)
    assert [r for i, r in enumerate(results) if i != 6] == [[2 * i] for i in range(9)]


def test_queue_limit_refuses_with_unavailable_style_error() -> None:
    gate = threading.Event()

    def blocked(key: Hashable, items: Sequence[list[int]]) -> list[list[int]]:
        gate.wait(10)
        return [list(i) for i in items]

    batcher = Batcher(blocked, BatchingOptions(max_batch_size=2, max_enqueued_batches=1))
    first = threading.Thread(target=batcher.submit, args=("m", [1], 1))
    first.start()
    time.sleep(0.2)  # now running, holding the only batch thread
    queued = [threading.Thread(target=batcher.submit, args=("m", [i], 1)) for i in (2, 3)]
    for t in queued:
        t.start()
    time.sleep(0.2)
    with pytest.raises(QueueFull, match="queue is full"):
        batcher.submit("m", [4], 1)
    gate.set()
    for t in (first, *queued):
        t.join(10)


def test_options_validate_and_come_from_the_parameters_file() -> None:
    opts = BatchingOptions.from_params(
        {"max_batch_size": 32, "batch_timeout_micros": 500, "num_batch_threads": 2,
         "max_enqueued_batches": 10, "pad_variable_length_inputs": False}
    )  # fmt: skip
    assert (opts.max_batch_size, opts.max_enqueued_rows, opts.num_batch_threads) == (32, 320, 2)
    with pytest.raises(ConfigError, match="max_batch_size: expected an integer >= 1, found 0"):
        BatchingOptions(max_batch_size=0)
    with pytest.raises(ConfigError, match="batch_timeout_micros"):
        BatchingOptions(batch_timeout_micros=-1)
