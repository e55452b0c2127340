"""Batching options from TF Serving's BatchingParameters, and merging/splitting with padding to
allowed batch sizes as TF Serving does (the batcher itself: test_async_batching.py)."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.errors import ConfigError
from recflow.serving import tfs_protos
from recflow.serving.batching import (
    BatchingOptions,
    ShapeMismatch,
    merge_inputs,
    split_outputs,
)


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
