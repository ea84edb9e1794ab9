"""RUN/run.json: what a run was trained with, so a later launch cannot silently change it.

The identity is the model, size, architecture, corpus and the fingerprints of the data
and vocabulary artifacts the run used (``pretrain.stages``). Resuming with a different
one stops with one line naming the difference and how to start a new run.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from pipeline.typed_config import ConfigError

FILE = "run.json"
LABELS = {"model": "MODEL", "size": "SIZE", "corpus": "CORPUS", "data": "cleaned corpus (CORPUS, SET or data.*)",
          "vocab": "vocabulary (tokenizer.*)", "pairs": "pair data (pairs.*)", "arch": "architecture (arch.*)",
          "vocab_size": "vocabulary size", "tokens": "sample kind (data.tokens: token shards or on the fly)",
          "mix": "data mixture (data.mix)"}


def identity(cfg) -> dict:
    from pretrain.stages import file_sha, plan

    p = plan(cfg)
    out = {"model": cfg.model, "size": cfg.size, "corpus": cfg.data.corpus, "data": p.fingerprint("clean"),
           "vocab": p.fingerprint("vocab"), "arch": dataclasses.asdict(cfg.arch),
           "artifacts": {"clean_dir": cfg.data.clean_dir, "tokenizer_dir": cfg.tokenizer.dir}}
    if "pairs" in p.stages:
        out["pairs"] = p.fingerprint("pairs")
        out["artifacts"]["pairs_dir"] = cfg.data.pairs_dir
    # What a sample is (a record, or a packed row of token shards) and where samples come from: the
    # data position in a checkpoint means nothing under another of either.
    out["tokens"] = cfg.data.tokens
    if cfg.data.mix:
        out["mix"] = [[m.name or Path(m.path).name, m.weight, file_sha(Path(m.path) / "manifest.json")] for m in cfg.data.mix]
    return out


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:16] + "…"


def check_identity(run_dir: Path, ident: dict) -> None:
    """Raise a one-line ConfigError if RUN/run.json records a different value for a key both have."""
    path = run_dir / FILE
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ConfigError(f"{path}: unreadable; move {run_dir} away or use a new RUN") from None
    for key, value in ident.items():
        if key == "artifacts" or key not in old or old[key] == value:
            continue
        raise ConfigError(f"{run_dir} was trained with another {LABELS.get(key, key)} ({key}: {_short(old[key])}, "
                          f"now {_short(value)}); to train with this one start a new run, e.g. RUN={run_dir}-2")


def write_identity(run_dir: Path, ident: dict) -> None:
    """Merge ident into RUN/run.json (atomic)."""
    path = run_dir / FILE
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    tmp = path.with_name(FILE + ".tmp")
    tmp.write_text(json.dumps({**old, **ident}, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def run_in_use(run_dir: Path) -> str | None:
    """Who holds RUN/.lock (a live training), or None."""
    import fcntl

    path = run_dir / ".lock"
    if not path.is_file():
        return None
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            return fh.read().strip() or "another process"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None
