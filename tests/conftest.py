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
