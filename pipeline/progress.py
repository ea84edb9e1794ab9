"""Progress of long steps: a bar on a terminal, a log line every 30 s elsewhere.

Beam runs the steps inside DoFns, on whatever worker the runner picks, so progress is
reported where the work happens: each DoFn makes its ``Progress`` in ``setup`` (it is never
pickled) and counts what it processed.  In memory (the default) that is the user's terminal;
on other runners the lines go to the worker logs, tagged with the process id.

A step that ends within a few seconds prints nothing, so small runs and the test suite stay
quiet: the bar appears after ``bar_after`` seconds, log lines come every ``every`` seconds.
``ZH_PROGRESS=off`` silences all of it; ``ZH_PROGRESS=log`` forces log lines on a terminal too.
"""
from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("pipeline.progress")


def _mode() -> str:
    mode = os.environ.get("ZH_PROGRESS", "").strip().lower()
    if mode in ("off", "0", "false", "no"):
        return "off"
    if mode == "log":
        return "log"
    try:
        return "bar" if sys.stderr.isatty() else "log"
    except (AttributeError, ValueError):      # a closed or replaced stderr
        return "log"


class Progress:
    """Counts ``unit``s of one step; ``update(n, chars=...)`` after each batch.

    The bar (tqdm) appears after ``bar_after`` seconds; without a terminal a line
    ``desc: N units (R/s), C M characters [pid, elapsed]`` is logged at most every ``every``
    seconds, and one final line at ``close`` when any was logged.
    """

    def __init__(self, desc: str, unit: str = "doc", total: int | None = None, every: float = 30.0,
                 bar_after: float = 3.0):
        self.desc, self.unit, self.total = desc, unit, total
        self.mode = _mode()
        self.every = bar_after if self.mode == "bar" else every
        self.n = 0
        self.chars = 0
        self.start = self.last = time.monotonic()
        self.logged = False
        self.bar = None

    def update(self, n: int = 1, chars: int = 0) -> None:
        self.n += n
        self.chars += chars
        if self.mode == "off":
            return
        now = time.monotonic()
        if self.bar is not None:
            self.bar.update(n)
            return
        if now - self.last < self.every:
            return
        self.last = now
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(desc=self.desc, unit=self.unit, total=self.total, initial=self.n, unit_scale=True,
                            leave=False, dynamic_ncols=True, mininterval=1.0, delay=1e-6)
            self.bar.start_t -= now - self.start        # elapsed time from the step's start
            self.bar.refresh()
        else:
            self._log()

    def _log(self) -> None:
        self.logged = True
        elapsed = max(time.monotonic() - self.start, 1e-9)
        of = f" of {self.total:,}" if self.total else ""
        text = f", {self.chars / 1e6:.1f} M characters" if self.chars else ""
        log.info("%s: %s%s %ss (%.0f/s)%s [pid %d, %.0f s]", self.desc, f"{self.n:,}", of, self.unit,
                 self.n / elapsed, text, os.getpid(), elapsed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.logged:
            self._log()
