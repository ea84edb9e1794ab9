"""pipeline/progress.py: quiet for short steps, a log line for long ones without a terminal, off on request."""
import io
import logging
import time

from pipeline import progress


def _run(monkeypatch, caplog, mode: str, every: float, steps: int = 6) -> list[str]:
    monkeypatch.setenv("ZH_PROGRESS", mode)
    caplog.set_level(logging.INFO, logger=progress.log.name)
    p = progress.Progress("clean", every=every)
    for _ in range(steps):
        time.sleep(0.02)
        p.update(10, chars=100)
    p.close()
    assert p.n == 10 * steps and p.chars == 100 * steps       # counted in every mode
    return [r.getMessage() for r in caplog.records if r.name == progress.log.name]


def test_short_step_prints_nothing(monkeypatch, caplog):
    assert _run(monkeypatch, caplog, "log", every=30.0) == []


def test_long_step_logs_counts_and_a_final_line(monkeypatch, caplog):
    lines = _run(monkeypatch, caplog, "log", every=0.05)
    assert lines and all(line.startswith("clean: ") and " docs (" in line for line in lines)
    assert lines[-1].startswith("clean: 60 docs")


def test_off_is_silent(monkeypatch, caplog):
    assert _run(monkeypatch, caplog, "off", every=0.0) == []


def test_bar_on_a_terminal(monkeypatch):
    """On a terminal the bar replaces the log lines; it starts its clock at the step's start."""
    monkeypatch.delenv("ZH_PROGRESS", raising=False)
    out = io.StringIO()
    out.isatty = lambda: True
    monkeypatch.setattr(progress.sys, "stderr", out)
    p = progress.Progress("clean", bar_after=0.0)
    p.update(5)
    p.update(5)
    assert p.bar is not None and p.bar.n == 10
    p.close()
    assert p.bar is None
