"""The request batcher (threads): merging, splitting, isolation of failures, queue limit,
waiting for arrivals, options, and padding to allowed batch sizes as TF Serving does.

No outcome depends on timing: a model call blocks on an event until the test has queued what
it wants (it waits by polling a count, never for a time), and the batcher reads a test clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import pytest

from recflow.errors import ConfigError
from recflow.serving import tfs_protos
from recflow.serving.batching import (
    Batcher,
    BatchingOptions,
    QueueFull,
    ShapeMismatch,
    merge_inputs,
    split_outputs,
)


class Model:
    """Doubles numbers; records every batch; the first call can be held until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[tuple[Hashable, list[int]]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, key: Hashable, items: Sequence[list[int]]) -> list[list[int]]:
        self.started.set()
        self.release.wait()
        flat = [x for item in items for x in item]
        if -1 in flat:
            raise ValueError("bad input -1")
        self.batches.append((key, flat))
        out, start = [], 0
        for item in items:  # split the merged result back per request
            out.append([2 * x for x in flat[start : start + len(item)]])
            start += len(item)
        return out


class Clock:
    """A monotonic clock the test moves by hand (or ``step`` seconds per read); counts how
    often the batcher read it."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 100.0
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.step
        return self.now


def until(condition: Callable[[], bool]) -> None:
    """Wait for another thread to reach a state (a count, never a duration)."""
    while not condition():
        threading.Event().wait(0.001)


def submit_in_threads(batcher: Batcher, jobs: list[tuple[str, list[int]]]) -> Callable[[], list]:
    """Start one thread per job; returns a function that joins them and gives the results."""
    results: list[object] = [None] * len(jobs)

    def one(i: int, key: str, item: list[int]) -> None:
        try:
            results[i] = batcher.submit(key, item, len(item))
        except Exception as exc:  # noqa: BLE001 (the test inspects it)
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i, k, v)) for i, (k, v) in enumerate(jobs)]
    for t in threads:
        t.start()

    def join() -> list[object]:
        for t in threads:
            t.join()
        return results

    return join


def test_lone_request_runs_at_once_without_waiting_for_the_timeout() -> None:
    model, clock, batches = Model(), Clock(step=10.0), []  # a wait would end at once
    batcher = Batcher(model, BatchingOptions(batch_timeout_micros=2_000_000), clock=clock,
                      on_batch=lambda n, rows: batches.append((n, rows)))  # fmt: skip
    assert batcher.submit("m", [1, 2], 2) == [2, 4]
    assert batches == [(1, 2)]
    assert clock.reads == 0  # nobody else was arriving: no wait was even considered


def test_queued_requests_are_merged_by_key_and_split_back() -> None:
    model, sizes = Model(hold_first=True), []
    options = BatchingOptions(max_batch_size=8, num_batch_threads=1)
    batcher = Batcher(model, options, on_batch=lambda n, rows: sizes.append((n, rows)))
    first = submit_in_threads(batcher, [("a", [99, 199])])
    until(model.started.is_set)  # the only batch thread is busy: the rest queue
    jobs = [("a" if i % 2 else "b", [i, i + 100]) for i in range(1, 12)]  # 6 'a', 5 'b'
    rest = submit_in_threads(batcher, jobs)
    until(lambda: batcher.queued == len(jobs))
    model.release.set()
    assert first() == [[198, 398]]
    assert rest() == [[2 * x for x in item] for _, item in jobs]  # each got its own rows
    # 'a': 12 rows -> 8 + 4, 'b': 10 rows -> 8 + 2, whatever order the threads queued in
    assert sorted(len(flat) for _, flat in model.batches[1:]) == [2, 4, 8, 8]
    for key, flat in model.batches:  # a batch holds one key only
        assert {("a" if (x % 100) % 2 else "b") for x in flat} == {key}
    assert sum(rows for _, rows in sizes) == 24 and len(sizes) == len(model.batches) == 5


def test_a_bad_request_fails_alone() -> None:
    model = Model(hold_first=True)
    batcher = Batcher(model, BatchingOptions(max_batch_size=64, num_batch_threads=1))
    first = submit_in_threads(batcher, [("m", [100])])
    until(model.started.is_set)
    jobs = [("m", [i]) for i in range(6)] + [("m", [-1])] + [("m", [i]) for i in range(6, 9)]
    rest = submit_in_threads(batcher, jobs)
    until(lambda: batcher.queued == len(jobs))
    model.release.set()
    assert first() == [[200]]
    results = rest()
    assert isinstance(results[6], ValueError)
    assert [r for i, r in enumerate(results) if i != 6] == [[2 * i] for i in range(9)]
    # the merged batch raised; its requests then ran one by one
    assert sorted(flat[0] for _, flat in model.batches[1:]) == list(range(9))


def test_queue_limit_refuses_with_unavailable_style_error() -> None:
    model = Model(hold_first=True)
    batcher = Batcher(model, BatchingOptions(max_batch_size=2, max_enqueued_batches=1))
    first = submit_in_threads(batcher, [("m", [1])])
    until(model.started.is_set)  # running, holding the only batch thread
    queued = submit_in_threads(batcher, [("m", [2]), ("m", [3])])
    until(lambda: batcher.queued == 2)  # 2 rows queued: the limit (1 batch x 2 rows)
    with pytest.raises(QueueFull, match="queue is full"):
        batcher.submit("m", [4], 1)
    model.release.set()
    assert first() == [[2]] and queued() == [[4], [6]]


def test_a_batch_waits_for_an_arrived_request_until_its_deadline() -> None:
    model, clock = Model(), Clock()
    options = BatchingOptions(max_batch_size=8, batch_timeout_micros=1_000_000)
    batcher = Batcher(model, options, clock=clock)

    # A request reached the server (arrive) and is submitted after x: x's batch waits for it.
    batcher.arrive()
    x = submit_in_threads(batcher, [("m", [1])])
    until(lambda: clock.reads >= 2)  # x's batch set its deadline and is waiting
    assert batcher.submit("m", [2], 1, arrived=True) == [4]
    assert x() == [[2]]
    assert [flat for _, flat in model.batches] == [[1, 2]]

    # An arrived request that never comes: once the clock passes the deadline, x runs alone.
    model.batches.clear()
    batcher.arrive()
    batcher.arrive()
    reads = clock.reads
    x = submit_in_threads(batcher, [("m", [3])])
    until(lambda: clock.reads >= reads + 2)
    clock.now += 1.0  # the 1 s batch_timeout_micros has passed
    batcher.depart()  # one of the two gives up; the other is still "arriving"; wakes the batch
    assert x() == [[6]]
    assert [flat for _, flat in model.batches] == [[3]]


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
    with pytest.raises(ConfigError, match=r"allowed_batch_sizes.*found \[4, 2\]"):
        BatchingOptions(max_batch_size=4, allowed_batch_sizes=(4, 2))
    with pytest.raises(ConfigError, match=r"at most max_batch_size \(4\)"):
        BatchingOptions(max_batch_size=4, allowed_batch_sizes=(2, 8))


def test_allowed_sizes_and_padding_flag_come_from_tf_servings_message() -> None:
    params = tfs_protos.parse_batching_text(
        "max_batch_size { value: 8 }\nallowed_batch_sizes: [2, 4, 8]\n"
        "pad_variable_length_inputs: true\n"
    )
    opts = BatchingOptions.from_proto(params)
    assert opts.allowed_batch_sizes == (2, 4, 8) and opts.pad_variable_length_inputs is True
    assert [opts.padded_rows(n) for n in (1, 2, 3, 5, 8)] == [2, 2, 4, 8, 8]
    assert opts.max_execution_rows == 8
    plain = BatchingOptions.from_proto(
        tfs_protos.parse_batching_text("max_batch_size { value: 8 }")
    )
    assert plain.allowed_batch_sizes == () and [plain.padded_rows(n) for n in (1, 3)] == [1, 3]


def test_merge_pads_to_the_next_allowed_size_and_split_drops_the_padding() -> None:
    opts = BatchingOptions(max_batch_size=8, allowed_batch_sizes=(1, 2, 4, 8))
    a = {"user_id": np.array([b"u1", b"u2"], dtype=object), "k": np.array([[1], [2]])}
    b = {"user_id": np.array([b"u3"], dtype=object), "k": np.array([[3]])}
    merged, sizes = merge_inputs([a, b], opts)
    assert sizes == [2, 1]
    # 3 rows run as 4; the padding row copies the first row of the last request (TF Serving)
    assert merged["user_id"].tolist() == [b"u1", b"u2", b"u3", b"u3"]
    assert merged["k"].tolist() == [[1], [2], [3], [3]]
    outputs = {"score": merged["k"][:, 0] * 10.0, "ids": merged["user_id"]}
    parts = split_outputs(outputs, sizes, rows=4)
    assert parts is not None
    assert [p["score"].tolist() for p in parts] == [[10.0, 20.0], [30.0]]
    assert [p["ids"].tolist() for p in parts] == [[b"u1", b"u2"], [b"u3"]]
    # an output that does not keep one row per input row cannot be split
    assert split_outputs({"total": np.array(7.0)}, sizes, rows=4) is None
    assert split_outputs({"first": merged["k"][:1]}, sizes, rows=4) is None
    # without allowed sizes, a batch runs at its own size
    natural, _ = merge_inputs([a, b], BatchingOptions(max_batch_size=8))
    assert natural["k"].shape == (3, 1)


def test_variable_length_inputs_are_padded_only_when_asked() -> None:
    short = {"ids": np.array([[7, 8]])}
    long = {"ids": np.array([[1, 2, 3], [4, 5, 6]])}
    with pytest.raises(ShapeMismatch, match="padding is turned off"):
        merge_inputs([short, long], BatchingOptions(max_batch_size=4))
    opts = BatchingOptions(max_batch_size=4, allowed_batch_sizes=(4,),
                           pad_variable_length_inputs=True)  # fmt: skip
    merged, sizes = merge_inputs([short, long], opts)
    # each tensor padded with its own first element (TF Serving's AddPadding), then rows
    assert merged["ids"].tolist() == [[7, 8, 7], [1, 2, 3], [4, 5, 6], [1, 2, 3]]
    assert sizes == [1, 2]


def test_a_batcher_with_allowed_sizes_runs_only_those_shapes() -> None:
    opts = BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 4, 8), num_batch_threads=1)
    shapes: list[int] = []
    release, started = threading.Event(), threading.Event()

    def run(key: Hashable, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        started.set()
        release.wait()
        merged, sizes = merge_inputs(items, opts)
        shapes.append(len(merged["x"]))
        parts = split_outputs({"y": merged["x"] * 2}, sizes, len(merged["x"]))
        assert parts is not None
        return parts

    batcher: Batcher[dict[str, Any], dict[str, Any]] = Batcher(run, opts)
    first = threading.Thread(target=batcher.submit, args=("m", {"x": np.array([1])}, 1))
    first.start()
    until(started.is_set)
    results: list[Any] = [None] * 3

    def one(i: int, rows: int) -> None:
        results[i] = batcher.submit("m", {"x": np.arange(rows) + 10 * i}, rows)

    threads = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate((1, 2, 2))]
    for t in threads:
        t.start()
    until(lambda: batcher.queued == 3)
    release.set()
    first.join()
    for t in threads:
        t.join()
    assert shapes == [2, 8]  # 1 row ran as 2; the queued 5 rows ran as 8
    assert [r["y"].tolist() for r in results] == [[0], [20, 22], [40, 42]]
