"""Shared test settings: paths to the repo and to the optional shared real-data folder."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ZH_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Caches (the decontamination index) go to one folder per test session, never the user's ~/.cache.
if "ZH_PRETRAIN_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["ZH_PRETRAIN_CACHE"] = tempfile.mkdtemp(prefix="zh-pretrain-cache-")
    atexit.register(shutil.rmtree, os.environ["ZH_PRETRAIN_CACHE"], True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Fixtures that run the real pipeline, trainer or a cluster: a test using one is in the slow tier
# (`make test` runs everything; `make test-fast` / `pytest -m "not slow"` skips these).
SLOW_FIXTURES = {"t5_data", "t5_tokens", "t5_run", "real_run", "sim_data", "runs", "first_run", "built", "news"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (set ZH_SHARED_DATA)")
    return SHARED_DATA


def sample_records() -> list[dict]:
    """The embedded sample corpus as raw records ({"id", "text"}), read without the pipeline."""
    import json

    out = []
    for path in sorted((REPO / "data" / "sample").glob("*.jsonl")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                rec = json.loads(line)
                out.append({"id": str(rec.get("id", f"{path.name}:{i}")), "text": rec["text"]})
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> list[str]:
    """A tokenizer and a one-shard "cleaned" corpus built in-process from the sample corpus (no Beam,
    no subprocess, ~2 s): config overrides for unit tests of objectives, collators and losses."""
    import gzip
    import json
    from collections import Counter

    from tokenizer.counting import count_document
    from tokenizer.fast import build_unigram, save_folder
    from tokenizer.jieba_util import jieba_instance
    from tokenizer.vocab import Counts, jieba_scorer, select_vocab

    root = tmp_path_factory.mktemp("tiny")
    records = sample_records()
    dt = jieba_instance()
    total = Counter()
    for r in records:
        total.update(count_document(r["text"], lambda s: dt.cut(s, HMM=False)))
    counts = Counts()
    table = {"w": counts.words, "a": counts.ascii, "c": counts.chars}
    for (kind, token), c in total.items():
        if kind == "n":
            setattr(counts, token, c)
        else:
            table[kind][token] = c
    vocab = select_vocab(counts, vocab_size=4000, min_word_freq=2, cjk_score=jieba_scorer(dt.FREQ, dt.total),
                         char_coverage="none", byte_fallback=True)      # what the tiny presets build
    save_folder(build_unigram(vocab.tokens, vocab.scores, byte_fallback=True), root / "tok")
    shards = []
    for split, part in (("train", records[:-20]), ("valid", records[-20:])):
        (root / "clean" / split).mkdir(parents=True)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part).encode()
        (root / "clean" / split / "shard-00000-of-00001.jsonl.gz").write_bytes(gzip.compress(data, mtime=0))
        shards.append({"path": f"{split}/shard-00000-of-00001.jsonl.gz", "split": split, "documents": len(part),
                       "characters": sum(len(r["text"]) for r in part)})
    (root / "clean" / "manifest.json").write_text(json.dumps({"shards": shards}), encoding="utf-8")
    return [f"tokenizer.dir={root / 'tok'}", f"data.clean_dir={root / 'clean'}", f"data.pairs_dir={root / 'pairs'}"]


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


@pytest.fixture(scope="session")
def t5_tokens(t5_data, tmp_path_factory) -> list[str]:
    """t5_data plus its token shards, built by the launcher's token stage (Beam, bulk encoder)."""
    import subprocess
    import sys

    overrides = [*t5_data, "data.tokens=true", f"data.tokens_dir={tmp_path_factory.mktemp('t5tokens') / 'tokens'}"]
    proc = subprocess.run([sys.executable, "-m", "pretrain.launch", "--model", "t5-pegasus", "--prepare-only",
                           *overrides], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return overrides


T5_RUN_STEPS = 60


@pytest.fixture
def launcher(capsys, monkeypatch):
    """``python -m pretrain.launch ARGS`` in this process (what its checks say before any work,
    without a new interpreter's 5 s of imports): returns (exit code, stderr). The root logger's
    handlers and level, which ``main`` sets, are put back afterwards."""
    import logging

    from pretrain.launch import main

    root = logging.getLogger()
    kept = root.handlers[:], root.level
    monkeypatch.chdir(REPO)

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = main(list(argv))
        finally:
            root.handlers[:], level = kept
            root.setLevel(level)
        return code, capsys.readouterr().err
    return run


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
