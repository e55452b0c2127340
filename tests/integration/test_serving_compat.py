"""Two model kinds' SavedModels under TF Serving's TensorFlow runtime, every signature.

The full check over every kind is `make check-serving-compat` (minutes; results in
bench/results/serving_compat.md). This runs the same code on two kinds that cover both
signature shapes (``popularity``: ``serving_default``; ``sasrec``: also ``recommend_history``
with a [B, L] string input), in the same throwaway environment (created here when missing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recflow.ops.serving_compat import check
from recflow.serving.release import TF_SERVING_VERSION

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "var" / "serving-compat" / f"venv-tf{TF_SERVING_VERSION}"


def test_exports_answer_identically_under_the_serving_runtime(tmp_path: Path) -> None:
    # No skip when the environment is missing: `check` creates it (tensorflow-cpu from PyPI,
    # about 1.5 GB, once per checkout) and keeps it under var/ for later runs.
    report = check(TF_SERVING_VERSION, tmp_path, VENV, ["popularity", "sasrec"])
    assert report["candidate_tensorflow"] == TF_SERVING_VERSION
    assert set(report["kinds"]) == {"popularity", "sasrec"}
    assert sorted(report["kinds"]["sasrec"]["signatures"]) == [
        "recommend_history",
        "serving_default",
    ]
    for name, kind in report["kinds"].items():
        assert kind["loaded_in_candidate"], name
        assert kind["passed"], (name, [o for o in kind["outputs"] if o["problem"]])
        assert kind["outputs"], name
    assert report["passed"]
