"""Served top-K answers against a reference: strict about behaviour, tolerant of GPU numerics.

One comparison for the canary check (``Promoter.verify_canary``) and infra validation
(``infra_validation.compare_outputs``). The reference is the exported model run in-process
(CPU, float32); the served answer may come from a GPU, where Ampere and newer compute float32
matmuls in TF32 by default. So:

* Scores are compared **item by item** (the served score of item X against the reference's
  score of X), within ``rtol`` times the largest reference score of the row, plus ``atol``.
* Two items whose reference scores lie within twice that tolerance are a **tie**: the served
  order may put either first, and at the K boundary either may be in the top-K. To recognise
  an item that came in from just beyond K, the reference holds the top-(K+m) items
  (:func:`reference_answers`, m = ``REFERENCE_EXTRA``).
* Everything else is a difference: an item the reference does not rank in its top-(K+m), a
  score off by more than the tolerance, two non-tied items in the wrong order, a reference
  top-K item missing from the answer while scoring clearly above the served K-th item, a
  different number of real (non-padding) items, or titles/reasons that do not follow their
  item.

The tolerance, ``TF32_RTOL`` = 5e-3, relative to the row's largest |score| (a norm-wise bound,
as for dot products: a score near 0 by cancellation carries the error of its large terms):
TF32 keeps 10 of float32's 23 mantissa bits, so rounding one operand costs at most 2^-11
(4.9e-4) relative, a product of two rounded operands at most 2^-10 (9.8e-4). Accumulation stays
float32, so a dot product of any length L is off by at most 2^-10 * sum|a_i b_i| (plus L * 2^-24
from float32 summation, which a CPU run has too), i.e. about 1e-3 of the row's score scale per
matmul layer; the models here chain at most four (Mult-VAE 600-200-600-N; the ranking MLP
three), hence 4 * 2^-10 = 3.9e-3, rounded up to 5e-3. Emulated (``make bench-tf32``:
operands rounded to TF32 by bit masking, float64 products; bench/results/tf32_tolerance.md),
the largest error relative to the row's largest score was 5.1e-4 (dot products, d=64),
3.2e-4 (EASE, 1,700 items), 8.0e-4 (a four-layer VAE), 1.3e-3 (a three-layer MLP): within
5e-3 with room. A model whose scores differ from its export by more than that is not "the
same model on other hardware".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow import contract

if TYPE_CHECKING:
    import numpy.typing as npt

TF32_RTOL = 5e-3  # relative to the row's largest |score|; derivation in the module docstring
ATOL = 1e-6  # floor for rows whose scores are all ~0
REFERENCE_EXTRA = 10  # m: the reference ranks top-(K+m) so boundary ties can be recognised
_ITEMS, _SCORES = contract.OUTPUT_ITEM_IDS, contract.OUTPUT_SCORES
_MAX_REPORTED = 5  # problems listed per output before "... and N more rows"

Answers = Mapping[str, np.ndarray]


def as_text(values: npt.ArrayLike) -> np.ndarray:
    """Object/bytes/str arrays as str arrays (gRPC gives bytes, in-process gives str)."""
    arr = np.asarray(values)
    if arr.size == 0:
        return arr.astype(str)
    return np.vectorize(
        lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v), otypes=[str]
    )(arr)


def _row(
    s_items: np.ndarray,
    s_scores: np.ndarray,
    r_items: np.ndarray,
    r_scores: np.ndarray,
    rtol: float,
    atol: float,
) -> list[tuple[str, str]]:
    """(output, difference) in one row (served K wide, reference K+m wide); empty: same."""
    k, width = len(s_items), len(r_items)
    s_valid = np.isfinite(s_scores) & (s_items != "")
    r_valid = np.isfinite(r_scores) & (r_items != "")
    n_served, n_ref = int(s_valid.sum()), int(r_valid[:k].sum())
    if n_served != n_ref or not s_valid[:n_served].all():
        return [(_ITEMS, f"{n_served} real items served, {n_ref} in the reference's top-{k}")]
    finite = np.abs(r_scores[r_valid])
    tol = atol + rtol * (float(finite.max()) if finite.size else 0.0)
    ref = {str(i): float(s) for i, s, ok in zip(r_items, r_scores, r_valid, strict=True) if ok}
    problems: list[tuple[str, str]] = []
    served = [
        (str(i), float(s)) for i, s in zip(s_items[:n_served], s_scores[:n_served], strict=True)
    ]
    for rank, (item, score) in enumerate(served, start=1):
        if item not in ref:
            problems.append(
                (_ITEMS, f"item {item!r} (rank {rank}) is not in the reference's top-{width}")
            )
        elif abs(score - ref[item]) > tol:
            problems.append(
                (_SCORES, f"item {item!r}: score {score:.6g} served, {ref[item]:.6g} in the "
                 f"reference (tolerance {tol:.3g})")
            )  # fmt: skip
    if problems:
        return problems
    tie = 2 * tol  # both sides carry up to tol of error
    ref_scores = [ref[item] for item, _ in served]
    for rank in range(len(served) - 1):
        later = max(ref_scores[rank + 1 :])
        if later > ref_scores[rank] + tie:
            problems.append(
                (_ITEMS, f"item {served[rank][0]!r} ranked {rank + 1} (reference score "
                 f"{ref_scores[rank]:.6g}) above an item scoring {later:.6g}: not a tie "
                 f"(ties are within {tie:.3g})")
            )  # fmt: skip
            break
    lowest = min(ref_scores) if ref_scores else float("-inf")
    served_ids = {item for item, _ in served}
    for rank, (item, ok) in enumerate(zip(r_items[:k], r_valid[:k], strict=True), start=1):
        if ok and str(item) not in served_ids and ref[str(item)] > lowest + tie:
            problems.append(
                (_ITEMS, f"item {str(item)!r} (reference rank {rank}, score "
                 f"{ref[str(item)]:.6g}) is missing from the served top-{k}, whose last item "
                 f"scores {lowest:.6g}: not a tie")
            )  # fmt: skip
    return problems


def _item_aligned(
    name: str, served: np.ndarray, want: np.ndarray, s_items: np.ndarray, r_items: np.ndarray
) -> list[str]:
    """Titles/reasons must follow their item wherever tied items moved."""
    rows = []
    got, ref = as_text(served), as_text(want)
    for r in range(s_items.shape[0]):
        where = {str(item): j for j, item in enumerate(r_items[r, : ref.shape[1]]) if item != ""}
        for j, item in enumerate(s_items[r]):
            if item != "" and item in where and got[r, j] != ref[r, where[item]]:
                rows.append(r)
                break
    return [f"output {name!r}: {len(rows)} rows differ from the reference's"] if rows else []


def _positional(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str:
    """Any other output: equal (strings) or close (numbers), position by position."""
    if got.shape != want.shape:
        return f"output {name!r}: shape {got.shape} served, {want.shape} in the reference"
    if want.dtype.kind in "fc":
        g, w = got.astype(np.float64), want.astype(np.float64)
        close = np.isclose(g, w, atol=atol, rtol=rtol, equal_nan=True)
        if not close.all():
            worst = float(np.nanmax(np.abs(g - w)[~close]))
            return (
                f"output {name!r}: {int((~close).sum())} of {close.size} values differ "
                f"(largest difference {worst:.3g}, tolerance atol={atol} rtol={rtol})"
            )
    elif not np.array_equal(as_text(got), as_text(want)):
        return f"output {name!r}: values differ from the reference's"
    return ""


def compare_answers(
    served: Answers, reference: Answers, *, rtol: float = TF32_RTOL, atol: float = ATOL
) -> list[str]:
    """What differs in behaviour between a served answer and the reference (empty: none).

    ``reference`` may be wider than ``served`` (top-(K+m) item ids and scores); item-aligned
    outputs (titles, reasons) need only its first K columns.
    """
    items_key, scores_key = contract.OUTPUT_ITEM_IDS, contract.OUTPUT_SCORES
    problems = [
        f"output {name!r} missing from the served answer"
        for name in sorted(reference)
        if name not in served
    ]
    if problems or items_key not in reference or scores_key not in reference:
        return problems + [
            p
            for name in sorted(set(reference) - {items_key, scores_key})
            if name in served
            for p in [
                _positional(name, np.asarray(served[name]), np.asarray(reference[name]), rtol, atol)
            ]  # fmt: skip
            if p
        ]
    s_items, r_items = as_text(served[items_key]), as_text(reference[items_key])
    s_scores = np.asarray(served[scores_key], dtype=np.float64)
    r_scores = np.asarray(reference[scores_key], dtype=np.float64)
    if (
        s_items.ndim != 2
        or r_items.ndim != 2
        or s_items.shape[0] != r_items.shape[0]
        or s_items.shape[1] > r_items.shape[1]
        or s_scores.shape != s_items.shape
        or r_scores.shape != r_items.shape
    ):
        return [
            f"output {items_key!r}: shape {s_items.shape} served, {r_items.shape} in the "
            f"reference (scores {s_scores.shape} and {r_scores.shape}); expected [B, K] "
            "served against [B, K or more]"
        ]
    by_row = {}
    for r in range(s_items.shape[0]):
        found = _row(s_items[r], s_scores[r], r_items[r], r_scores[r], rtol, atol)
        if found:
            by_row[r] = found
    for r, found in list(by_row.items())[:_MAX_REPORTED]:
        for output in (_ITEMS, _SCORES):
            these = [text for out, text in found if out == output]
            if these:
                problems.append(f"output {output!r}, row {r}: " + "; ".join(these[:3]))
    if len(by_row) > _MAX_REPORTED:
        problems.append(f"... and {len(by_row) - _MAX_REPORTED} more rows")
    for name in sorted(set(reference) - {items_key, scores_key}):
        got, want = np.asarray(served[name]), np.asarray(reference[name])
        if got.shape == s_items.shape and want.ndim == 2 and want.shape[0] == got.shape[0]:
            problems += _item_aligned(name, got, want, s_items, r_items)
        else:
            problems += [p for p in [_positional(name, got, want, rtol, atol)] if p]
    return problems


def reference_answers(
    saved_model_dir: Path, extra: int = REFERENCE_EXTRA
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The exported model in-process: its ``serving_default`` top-K, widened to top-(K+m).

    The m extra items come from ``score_all`` (raw scores, nothing excluded): the unseen items
    ranked next after the K-th. An item scoring above the K-th yet absent from the top-K was
    excluded by the model (a seen item) and is skipped. A model without ``score_all`` gives
    its top-K only (boundary swaps then count as differences).
    """
    from recflow.errors import ContractError
    from recflow.models import load_recommender
    from recflow.models.scorer import load_scorer

    top = load_recommender(Path(saved_model_dir))
    try:
        scorer = load_scorer(Path(saved_model_dir)) if extra > 0 else None
    except ContractError:
        scorer = None

    def answer(user_ids: np.ndarray) -> dict[str, np.ndarray]:
        out = top(user_ids)
        if scorer is None:
            return out
        raw, catalogue = scorer(user_ids)
        items, scores = as_text(out[contract.OUTPUT_ITEM_IDS]), out[contract.OUTPUT_SCORES]
        k = items.shape[1]
        wide_items = np.full((items.shape[0], k + extra), "", dtype=object)
        wide_scores = np.full((items.shape[0], k + extra), -np.inf, dtype=np.float32)
        wide_items[:, :k], wide_scores[:, :k] = items, scores
        for r in range(items.shape[0]):
            valid = np.isfinite(scores[r]) & (items[r] != "")
            if not valid.all():  # fewer unseen items than K: all of them are in the top-K
                continue
            kth = float(scores[r, -1])
            taken = set(items[r].tolist())
            order = np.argsort(-raw[r], kind="stable")
            nxt = [j for j in order if raw[r, j] <= kth and catalogue[j] not in taken][:extra]
            wide_items[r, k : k + len(nxt)] = catalogue[nxt]
            wide_scores[r, k : k + len(nxt)] = raw[r, nxt]
        return {**out, contract.OUTPUT_ITEM_IDS: wide_items, contract.OUTPUT_SCORES: wide_scores}

    return answer
