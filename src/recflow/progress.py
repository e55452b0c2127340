"""Progress inside long steps: a line every ``interval`` seconds with rate and ETA.

An epoch over millions of examples, a full-ranking evaluation or a large fit can run for
minutes; without this the task log is silent meanwhile. ``Progress.update(done)`` is cheap to
call often: it prints only when ``interval`` seconds have passed since the last line, reading
time from an injected ``clock`` (tests pass a fake one). When ``bar`` is on (default: stdout
is a terminal) the same figures are also drawn as a bar on one rewritten terminal line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import keras

DEFAULT_INTERVAL_SECONDS = 30.0
BAR_WIDTH = 30


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Reports ``done`` of ``total`` ``unit`` for ``what`` through ``say`` at a fixed interval."""

    def __init__(
        self,
        what: str,
        total: int,
        say: Callable[[str], None],
        *,
        unit: str = "examples",
        interval: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, max(0, int(total)), unit
        self.say, self.interval, self.clock = say, float(interval), clock
        self.stream = stream if stream is not None else sys.stdout
        self.bar = bool(self.stream.isatty()) if bar is None else bar
        self.started = self.last = clock()
        self.done = 0
        self.lines = 0

    def line(self) -> str:
        """The current figures: done/total, percent, rate and ETA."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = _duration(left) if left != float("inf") else "unknown"
        return (
            f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({pct:.1f}%), "
            f"{rate:,.0f} {self.unit}/s, elapsed {_duration(elapsed)}, ETA {eta}"
        )

    def update(self, done: int) -> None:
        """Record ``done`` (absolute count); print a line if the interval has passed."""
        self.done = min(int(done), self.total) if self.total else int(done)
        now = self.clock()
        if self.bar:
            filled = int(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
            self.stream.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.line()}")
            self.stream.flush()
        if self.interval > 0 and now - self.last >= self.interval:
            self.last = now
            self.lines += 1
            self.say(self.line())

    def advance(self, n: int) -> None:
        self.update(self.done + int(n))

    def finish(self) -> None:
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()


def keras_callback(progress: Progress, examples_per_batch: int) -> keras.callbacks.Callback:
    """A Keras callback feeding ``progress`` after each (executed) batch of one epoch."""
    import keras

    class _Callback(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
            progress.update((batch + 1) * examples_per_batch)

    return _Callback()
