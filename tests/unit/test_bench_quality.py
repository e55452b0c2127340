"""bench/quality.py: the quotable run refuses reuse; seeds per row follow PROTOCOL.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import quality  # noqa: E402
from quality_lib import point_name, protocol_hash, protocol_spec, weight_grid  # noqa: E402


@pytest.mark.parametrize("extra", [["--reuse"], ["--groups", "ms:family"], ["--smoke"]])
def test_final_run_refuses_reuse_and_subsets(extra: list[str], tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCH / "quality.py"), "--final", "--out", str(tmp_path), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "--final is the run README quotes" in done.stderr
    assert not (tmp_path / "quality.json").exists()


def test_protocol_block_and_hash() -> None:
    spec = protocol_spec()
    assert spec["evaluation_seeds"] == [1, 2, 3, 4, 5]
    assert len(protocol_hash()) == 64
    grid = weight_grid(spec["weight_step"])
    assert len(grid) == 66 and all(abs(sum(w) - 1) < 1e-9 for w in grid)
    assert point_name((1.0, 0.0, 0.0)) == "ease" and point_name((0.0, 0.5, 0.5)) == "blend"


def test_plan_gives_headline_and_ease_five_seeds_others_three_and_marked_rows_one() -> None:
    spec = protocol_spec()
    sel = {"ms": {"choice": "blend"}, "loo": {"choice": "sasrec"}}
    groups = quality.plan(spec, sel)
    ms = groups["ms:family"]["rows"]
    assert ms["blend"] == ms["ease"] == [1, 2, 3, 4, 5]
    assert ms["multvae"] == [1, 2, 3] and ms["popularity"] == [1]
    assert groups["loo:sasrec"]["rows"]["sasrec"] == [1, 2, 3, 4, 5]
    assert groups["loo:family"]["rows"]["blend"] == [1, 2, 3]
    assert groups["loo:sasrec_sqn"]["rows"]["sasrec_sqn"] == [1]
    assert groups["ms:ranking_mlp+dp"]["rows"]["ranking_mlp+dp"] == [1]
    assert "ms:sasrec" not in groups  # not run under MS (PROTOCOL.md)
    # A choice outside the listed rows is added with five seeds.
    groups = quality.plan(spec, {"ms": {"choice": "user_ease"}, "loo": {"choice": "ease"}})
    assert groups["ms:family"]["rows"]["user_ease"] == [1, 2, 3, 4, 5]
    assert groups["loo:sasrec"]["rows"]["sasrec"] == [1, 2, 3]
