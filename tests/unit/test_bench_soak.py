"""bench/soak_report.py: the RSS slopes that tell a leak (steady) from a warm-up (fading)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import soak_report  # noqa: E402


def _samples(mb_at: Callable[[float], float]) -> list[tuple[float, float]]:
    return [(float(t), mb_at(t)) for t in range(0, 601, 5)]


def test_a_steady_leak_shows_in_every_window() -> None:
    leak = _samples(lambda t: 300.0 + 2.0 * t / 60.0)  # 2 MB per minute throughout
    assert soak_report.slope_mb_per_min(leak, after_s=120) == 2.0
    windows = soak_report.window_slopes(leak, every_s=120)
    assert [w["from_s"] for w in windows] == [0, 120, 240, 360, 480]
    assert {w["mb_per_min"] for w in windows} == {2.0}


def test_a_warm_up_fades_and_a_swap_step_is_told_apart_from_growth() -> None:
    def warm_then_step(t: float) -> float:
        warm = min(t, 120.0) / 60.0 * 10.0  # 10 MB/min for two minutes, then flat
        return 300.0 + warm + (25.0 if t > 300 else 0.0)  # a hot swap at 300 s adds 25 MB

    samples = _samples(warm_then_step)
    windows = soak_report.window_slopes(samples, every_s=120)
    assert windows[0]["mb_per_min"] > 9.0
    assert windows[1]["mb_per_min"] == 0.0  # 120-240 s: warmed up, before the swap
    (step,) = soak_report.swap_steps(samples, [300.0])
    assert step == {
        "at_s": 300.0,
        "before_mb": 320.0,
        "max_after_mb": 345.0,
        "slope_until_next_swap_mb_per_min": 0.0,
    }


def test_too_few_points_give_no_slope() -> None:
    assert soak_report.slope_mb_per_min([(0.0, 1.0), (5.0, 2.0)], after_s=0) is None
