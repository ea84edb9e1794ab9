"""Shared test settings: paths to the repo and to the optional shared real-data folder."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ZH_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (set ZH_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def t5_data(tmp_path_factory) -> list[str]:
    """Clean sample corpus, tokenizer and pseudo-summary pairs, built once per test session.

    Returns the config overrides that point a T5-PEGASUS run at them.
    """
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("t5data")
    overrides = [f"data.clean_dir={root / 'clean'}", f"tokenizer.dir={root / 'tok'}",
                 f"data.pairs_dir={root / 'pairs'}"]
    proc = subprocess.run([sys.executable, "-m", "pretrain.launch", "--model", "t5-pegasus", "--prepare-only",
                           *overrides], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return overrides


T5_RUN_STEPS = 60


def launch_t5(tmp: Path, *extra: str):
    """`make pretrain MODEL=t5-pegasus` as the launcher runs it, with every output under tmp."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pretrain.launch", "--model", "t5-pegasus", "--steps", str(T5_RUN_STEPS),
           "--run", str(tmp / "run"), f"data.clean_dir={tmp / 'clean'}", f"tokenizer.dir={tmp / 'tok'}",
           f"data.pairs_dir={tmp / 'pairs'}", "train.log_every=5", "train.eval_every=30",
           "train.save_every=30", "train.eval_generate=4", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="session")
def t5_run(tmp_path_factory):
    """One finished tiny T5-PEGASUS run (whole chain from the sample corpus), shared by tests.

    Returns (tmp, process): tmp/run is the run directory (metrics.jsonl, checkpoints/, export/),
    tmp/clean, tmp/tok and tmp/pairs the data stages.
    """
    tmp = tmp_path_factory.mktemp("t5run")
    proc = launch_t5(tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, proc
