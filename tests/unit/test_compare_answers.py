"""The served-vs-reference comparison: TF32 numerics pass, changed behaviour does not."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.serving.compare import REFERENCE_EXTRA, TF32_RTOL, compare_answers

K = 10
N_ITEMS, DIM, USERS = 300, 64, 40


def tf32(x: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32 (10 mantissa bits, round to nearest even), as Ampere GPUs do."""
    bits = np.asarray(x, np.float32).copy().view(np.uint32)
    bits += np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1))
    bits &= np.uint32(0xFFFFE000)
    return bits.view(np.float32)


def model(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.normal(0, 0.3, (USERS, DIM)).astype(np.float32)
    items = rng.normal(0, 0.3, (N_ITEMS, DIM)).astype(np.float32)
    return users, items


def top(scores: np.ndarray, k: int) -> dict[str, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ids = np.array([[f"i{j}" for j in row] for row in order], dtype=object)
    return {"item_ids": ids, "scores": np.take_along_axis(scores, order, 1).astype(np.float32)}


def reference(seed: int = 0) -> dict[str, np.ndarray]:
    users, items = model(seed)
    return top(users @ items.T, K + REFERENCE_EXTRA)  # float32 on the CPU


def test_tf32_matmul_passes() -> None:
    users, items = model(0)
    served = top((tf32(users).astype(np.float64) @ tf32(items).T.astype(np.float64)), K)
    assert compare_answers(served, reference()) == []


def test_noise_of_tf32_magnitude_and_a_boundary_tie_swap_pass() -> None:
    ref = reference()
    rng = np.random.default_rng(1)
    served = {k: v[:, :K].copy() for k, v in ref.items()}
    scale = np.abs(ref["scores"]).max(axis=1, keepdims=True)
    # every score off by up to 4 x 2^-11 of the row's scale, as four TF32 layers may be
    served["scores"] += (rng.uniform(-1, 1, served["scores"].shape) * 4 * 2**-11 * scale).astype(
        np.float32
    )
    # row 0: the K-th and (K+1)-th items are made a near-tie and the GPU picked the other one
    ref["scores"][0, K] = ref["scores"][0, K - 1] * (1 - 1e-4)
    served["item_ids"][0, K - 1] = ref["item_ids"][0, K]
    served["scores"][0, K - 1] = ref["scores"][0, K]
    # row 1: two near-tied items inside the top-K come back in the other order
    ref["scores"][1, 4] = ref["scores"][1, 3] * (1 - 1e-4)
    served["item_ids"][1, [3, 4]] = ref["item_ids"][1, [4, 3]]
    served["scores"][1, [3, 4]] = ref["scores"][1, [4, 3]]
    assert compare_answers(served, ref) == []
    # the same boundary swap cannot be told from a wrong item without the extra m items
    narrow = {k: v[:, :K] for k, v in ref.items()}
    assert any("not in the reference's top-10" in p for p in compare_answers(served, narrow))


def test_one_swapped_item_id_fails() -> None:
    ref = reference()
    served = {k: v[:, :K].copy() for k, v in ref.items()}
    served["item_ids"][2, [0, 5]] = served["item_ids"][2, [5, 0]]  # scores left in place
    problems = compare_answers(served, ref)
    assert len(problems) == 1 and problems[0].startswith("output 'scores', row 2: item ")
    assert "score" in problems[0]
    # the swap with scores following their items is an ordering error (not a tie)
    served["scores"][2, [0, 5]] = served["scores"][2, [5, 0]]
    assert "not a tie" in compare_answers(served, ref)[0]


def test_an_item_from_far_down_the_ranking_fails() -> None:
    ref = reference()
    served = {k: v[:, :K].copy() for k, v in ref.items()}
    served["item_ids"][3, K - 1] = "i_never_ranked"
    assert "is not in the reference's top-20" in compare_answers(served, ref)[0]


def test_another_seeds_model_fails() -> None:
    users, items = model(0)
    other_users, other_items = model(1)
    served = top(other_users @ other_items.T, K)
    problems = compare_answers(served, reference(0))
    assert problems and problems[-1].startswith("... and ")  # every row differs


def test_padding_and_cold_rows_compare_cleanly() -> None:
    ref = {
        "item_ids": np.array([["a", "b", "", "", "c"]], object)[:, :4],
        "scores": np.array([[2.0, 1.0, -np.inf, -np.inf]], np.float32),
        "titles": np.array([["A", "B", "", ""]], object),
    }
    served = {k: v.copy() for k, v in ref.items()}
    served["item_ids"] = served["item_ids"].astype(bytes)  # as gRPC returns them
    assert compare_answers(served, ref) == []
    served["titles"] = np.array([["B", "A", "", ""]], object)
    assert compare_answers(served, ref) == ["output 'titles': 1 rows differ from the reference's"]
    short = {**ref, "item_ids": np.array([["a", "", "", ""]], object),
             "scores": np.array([[2.0, -np.inf, -np.inf, -np.inf]], np.float32)}  # fmt: skip
    assert "1 real items served, 2 in the reference's top-4" in compare_answers(short, ref)[0]


@pytest.mark.parametrize("rtol", [0.0, TF32_RTOL])
def test_exact_answers_pass_at_any_tolerance(rtol: float) -> None:
    ref = reference()
    assert compare_answers({k: v[:, :K] for k, v in ref.items()}, ref, rtol=rtol) == []
