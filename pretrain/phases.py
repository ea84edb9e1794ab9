"""Where a training step's time goes: wall time per phase, for one-step profiles (``train.profile_steps``).

Phases, in the trainer's order: ``data`` (read records, collate, copy to the device),
``forward`` (loss and its terms), ``backward``, ``optimizer`` (gradient norm and clipping,
the optimizer and schedule step), ``bookkeeping`` (finite checks, token and FLOP counts,
growth and logging). On CUDA every mark synchronizes the device, which is why profiling is
off by default: without it a step has no host sync outside the finite check and logging.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

PHASES = ("data", "forward", "backward", "optimizer", "bookkeeping")


class Phases:
    """Accumulates wall time per phase over the steps in ``[skip, skip + steps)``; a no-op when off."""

    def __init__(self, steps: int = 0, skip: int = 0):
        self.enabled = steps > 0
        self.skip, self.steps = skip, steps
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.counted = 0
        self._t = 0.0
        self._sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def start(self) -> None:
        if self.enabled:
            self._sync()
            self._t = time.perf_counter()

    def mark(self, phase: str) -> None:
        """The time since the last mark belongs to ``phase``."""
        if self.enabled:
            self._sync()
            now = time.perf_counter()
            self.totals[phase] += now - self._t
            self._t = now

    def end_step(self, step: int) -> None:
        """Keep the step's times if it is one of the profiled steps, else drop them."""
        if not self.enabled:
            return
        if self.skip < step <= self.skip + self.steps:
            self.counted += 1
            self._kept = dict(self.totals)
        else:
            self.totals = dict(getattr(self, "_kept", dict.fromkeys(PHASES, 0.0)))

    def report(self) -> dict:
        total = sum(self.totals.values())
        return {"steps": self.counted, "seconds_per_step": total / max(self.counted, 1),
                "share": {k: v / total if total else 0.0 for k, v in self.totals.items()}}

    def write(self, path: Path) -> None:
        if self.enabled and self.counted:
            Path(path).write_text(json.dumps(self.report(), indent=1), encoding="utf-8")
