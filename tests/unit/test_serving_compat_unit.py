"""recflow.ops.serving_compat's comparison: what counts as the same answer, on crafted arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recflow.ops.serving_compat import ATOL, compare, markdown

pytestmark = pytest.mark.unit


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, __meta__=np.array("{}"), **arrays)
    return path


def _by_key(ref: dict, cand: dict, tmp_path: Path) -> dict:
    n = len(list(tmp_path.glob("*.npz")))
    diffs = compare(
        _save(tmp_path / f"ref{n}.npz", **ref), _save(tmp_path / f"cand{n}.npz", **cand)
    )
    return {d.key: d for d in diffs}


def test_identical_answers_pass_bit_for_bit(tmp_path: Path) -> None:
    ref = {"m/s/scores": np.array([[0.5, -np.inf]], np.float32), "m/s/ids": np.array([["a", ""]])}
    [scores, ids] = sorted(_by_key(ref, ref, tmp_path).values(), key=lambda d: d.key)[::-1]
    assert scores.equal and scores.within_tolerance and scores.max_abs_diff == 0.0
    assert ids.equal and ids.within_tolerance


def test_numeric_noise_within_tolerance_passes_but_is_not_identical(tmp_path: Path) -> None:
    ref = {"m/s/scores": np.array([1.0, 2.0], np.float32)}
    cand = {"m/s/scores": np.array([1.0, 2.0 + ATOL / 2], np.float32)}
    [d] = _by_key(ref, cand, tmp_path).values()
    assert d.within_tolerance and not d.equal and d.max_abs_diff is not None


def test_a_changed_item_a_large_difference_or_a_missing_output_fails(tmp_path: Path) -> None:
    ref = {
        "m/s/ids": np.array([["a", "b"]]),
        "m/s/scores": np.array([1.0, 2.0], np.float32),
        "m/s/titles": np.array([["A", "B"]]),
    }
    cand = {"m/s/ids": np.array([["b", "a"]]), "m/s/scores": np.array([1.0, 2.1], np.float32)}
    diffs = _by_key(ref, cand, tmp_path)
    assert not diffs["m/s/ids"].within_tolerance
    assert not diffs["m/s/scores"].within_tolerance
    assert diffs["m/s/titles"].problem.startswith("missing")
    # -inf padding must stay -inf: a finite value in its place is a difference
    inf = {"m/s/scores": np.array([1.0, -np.inf], np.float32)}
    finite = {"m/s/scores": np.array([1.0, -1e30], np.float32)}
    [d] = _by_key(inf, finite, tmp_path).values()
    assert not d.within_tolerance


def test_report_table_names_every_kind() -> None:
    report = {
        "serving_version": "2.20.0", "exported_with_tensorflow": "2.21.0",
        "reference_tensorflow": "2.21.0", "candidate_tensorflow": "2.20.0",
        "tolerance": {"atol": ATOL, "rtol": 1e-4}, "passed": False, "total_seconds": 1.0,
        "venv_seconds": 0.5,
        "kinds": {
            "ease": {"signatures": ["serving_default"], "loaded_in_candidate": True,
                     "passed": True, "bit_identical": True, "outputs": []},
            "sasrec": {"signatures": ["recommend_history", "serving_default"],
                       "loaded_in_candidate": False, "passed": False, "bit_identical": False,
                       "outputs": [{"max_abs_diff": 0.25}]},
        },
    }  # fmt: skip
    text = markdown(report)
    assert "**FAILED**" in text
    assert "| ease | serving_default | yes | yes | yes | 0 |" in text
    assert "| sasrec | recommend_history, serving_default | NO | no | NO | 0.25 |" in text


def test_quick_config_puts_every_epoch_setting_at_one():
    from recflow.config import TrainConfig
    from recflow.ops.serving_compat import quick_config
    from recflow.settings import flat_values

    epochs = {k: v for k, v in flat_values(quick_config("sasrec")).items() if k.endswith("epochs")}
    assert {"epochs", "sasrec_epochs", "multvae_epochs", "two_stage_tower_epochs"} <= set(epochs)
    assert set(epochs.values()) == {1}
    assert quick_config("sasrec").model == "sasrec"
    assert TrainConfig().sasrec.epochs > 1  # the defaults themselves are untouched
