"""How long steps report themselves: step timings for the summary, and progress on long steps.

    timer = Timer()
    with timer("read"):
        ...                                  # logs "read        4.20s"
    with progress("ranked lists", total=n_users, unit="users") as bar:
        bar.update(256)

On a terminal a long step shows a tqdm bar (the bar implicit's own fit uses); when the output is a
log (a file, a pipe, a service manager) it writes a line at most every LOG_EVERY seconds instead,
so a six-minute run is never silent for a minute and a log is not flooded with bar redraws.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager

from tqdm import tqdm

log = logging.getLogger("training")

LOG_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal


def interactive() -> bool:
    return sys.stderr.isatty()


class Timer:
    """Logs each step with its duration and keeps them for the summary. A child timer (`sub`)
    logs its steps indented under its parent's name and keeps them apart from the parent's."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.steps: dict[str, float] = {}

    def sub(self, name: str) -> Timer:
        return Timer(f"{self.prefix}{name} / ")

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        yield
        took = time.perf_counter() - t0
        self.steps[name] = self.steps.get(name, 0.0) + took
        log.info("%s%-10s %.2fs", self.prefix, name, took)


class _LogLines:
    """tqdm's update() and close() as rate-limited log lines. Thread-safe: ranking threads share it."""

    def __init__(self, desc: str, total: int, unit: str) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.n, self.t0 = 0, time.monotonic()
        self.last = self.t0
        self.lock = threading.Lock()

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.n += n
            now = time.monotonic()
            if now - self.last >= LOG_EVERY and self.n < self.total:
                self.last = now
                rate = self.n / max(now - self.t0, 1e-9)
                left = (self.total - self.n) / max(rate, 1e-9)
                log.info(
                    "%s: %s/%s %s (%.0f%%), %.0fs left",
                    self.desc,
                    f"{self.n:,}",
                    f"{self.total:,}",
                    self.unit,
                    100 * self.n / self.total,
                    left,
                )

    def close(self) -> None:
        pass


@contextmanager
def progress(desc: str, total: int, unit: str = "it"):
    """A progress reporter with `update(n)`: a bar on a terminal, log lines otherwise."""
    bar = tqdm(total=total, desc=desc, unit=unit, leave=False) if interactive() else _LogLines(desc, total, unit)
    try:
        yield bar
    finally:
        bar.close()


def als_callback(desc: str, iterations: int):
    """An implicit `fit(callback=...)` that logs iterations at most every LOG_EVERY seconds (for
    a log; on a terminal implicit draws its own bar)."""
    lines = _LogLines(desc, iterations, "iterations")

    def callback(iteration: int, elapsed: float, loss: float) -> None:
        lines.update(1)

    return callback
