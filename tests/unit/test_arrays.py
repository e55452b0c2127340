"""recflow.arrays.sorted_unique is np.unique for the arrays the stages pass it."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.arrays import sorted_unique


@pytest.mark.parametrize(
    "values",
    [
        np.array([5, 3, 5, 1, 3, 3, 9], dtype=np.int64),
        np.array([-2, 7, -2, 0], dtype=np.int32),
        np.array([3], dtype=np.int64),
        np.array([], dtype=np.int64),
        np.array([True, False, True]),
        np.random.default_rng(0).integers(0, 1_000, 20_000, dtype=np.uint32),
    ],
    ids=["int64", "negative int32", "one", "empty", "bool", "many uint32"],
)
def test_it_returns_what_np_unique_returns(values: np.ndarray) -> None:
    got = sorted_unique(values)
    expected = np.unique(values)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_floats_keep_numpys_nan_handling() -> None:
    got = sorted_unique(np.array([1.0, np.nan, 1.0, np.nan]))
    np.testing.assert_array_equal(got, np.array([1.0, np.nan]))


def test_the_input_is_left_as_it_was() -> None:
    values = np.array([4, 1, 4, 2], dtype=np.int64)
    sorted_unique(values)
    np.testing.assert_array_equal(values, [4, 1, 4, 2])
