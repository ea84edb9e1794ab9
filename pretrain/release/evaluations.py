"""The release's downstream evaluations: each task of the objective's spec through ``python -m pretrain.evaluate``."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from pretrain.config import REPO_ROOT

log = logging.getLogger("pretrain")


def run_evaluations(model_dir: Path, tasks: tuple[str, ...], skip: bool, data: str | None, options: list[str],
                    timeout: int, defaults: dict[str, str] | None = None) -> dict[str, dict | str]:
    """{task: metrics} via `python -m pretrain.evaluate`, or {task: "not run: <reason>"}.

    `data` applies to every task; otherwise `defaults[task]` (e.g. the run's held-out
    text for mlm), otherwise the task's own default data.
    """
    import importlib.util
    results: dict[str, dict | str] = {}
    for task in tasks:
        if skip:
            results[task] = "not run: skipped (--skip-eval)"
            continue
        if importlib.util.find_spec(f"pretrain.evaluation.{task}") is None:
            results[task] = f"not run: pretrain/evaluation/{task}.py is not available in this checkout"
            continue
        cmd = [sys.executable, "-m", "pretrain.evaluate", "--model", str(model_dir), "--task", task,
               *(["--data", data or (defaults or {}).get(task)] if data or (defaults or {}).get(task) else []), *[a for o in options for a in ("-o", o)]]
        log.info("evaluating: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            results[task] = f"not run: timed out after {timeout} s"
            continue
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines:
            results[task] = json.loads(lines[-1])
        else:
            errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
            results[task] = (f"not run: {errors[-1].removeprefix('error: ')}" if errors else
                             f"not run: the evaluator exited with status {proc.returncode}")
    return results
