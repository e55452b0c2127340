"""Progress lines at a fixed interval, with rate and ETA; the clock is injected."""

from __future__ import annotations

import io

from recflow.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_with_rate_and_eta() -> None:
    clock, lines = FakeClock(), []
    meter = Progress("epoch 1/5", 1_000, lines.append, interval=30, clock=clock, bar=False)
    clock.now += 10
    meter.update(100)
    assert lines == []  # before the interval: silent
    clock.now += 20
    meter.update(300)  # 30 s, 300 done: 10/s, 700 left -> 70 s
    assert lines == [
        "epoch 1/5: 300/1,000 examples (30.0%), 10 examples/s, elapsed 0m30s, ETA 1m10s"
    ]
    clock.now += 29
    meter.update(400)
    assert len(lines) == 1
    clock.now += 1
    meter.update(600)
    assert len(lines) == 2 and "(60.0%)" in lines[1] and "ETA 0m40s" in lines[1]


def test_zero_interval_is_silent_and_bar_goes_to_the_terminal_stream() -> None:
    clock, lines, stream = FakeClock(), [], io.StringIO()
    meter = Progress("eval", 10, lines.append, interval=0, clock=clock, bar=True, stream=stream)
    clock.now += 5
    meter.update(5)
    meter.finish()
    assert lines == []
    assert stream.getvalue().startswith("\r[" + "#" * 15 + "." * 15 + "] eval: 5/10 examples")
    assert stream.getvalue().endswith("\n")


def test_bar_defaults_to_off_when_not_a_terminal() -> None:
    meter = Progress("x", 1, print, stream=io.StringIO())
    assert meter.bar is False
