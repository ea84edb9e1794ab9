"""Stage reuse: a stage's output folder records a fingerprint of everything it was built from.

A stage is rebuilt only when its inputs (corpus files, upstream manifest),
its parameters or its own code changed; otherwise ``make pretrain`` reuses it.
Corpus files are fingerprinted by path, size and modification time so that a
terabyte corpus is not re-hashed on every launch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

from pretrain.config import REPO_ROOT

log = logging.getLogger("pretrain")
STAMP = ".stage.json"


def corpus_files(corpus: str) -> list[str]:
    """The files a CORPUS spec names (comma-separated globs, files or folders); none for hf: specs."""
    from pipeline.readers import expand_input

    if corpus.startswith("hf:"):
        return []
    paths = []
    for pattern in filter(None, (p.strip() for p in corpus.split(","))):
        try:
            paths += [p for p in expand_input(pattern) if not p.startswith("hf:")]
        except (OSError, ValueError):
            continue
    return sorted(set(paths))


def files_signature(paths: list[str]) -> list:
    return [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths]


def code_signature(*patterns: str) -> str:
    """Hash of the source files that implement a stage (so a code change rebuilds it)."""
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(REPO_ROOT.glob(pattern)):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def file_sha(path: str | Path) -> str:
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def fingerprint(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def run_stage(name: str, out_dir: str | Path, spec: dict, build: Callable[[], object]) -> bool:
    """Build out_dir unless its recorded fingerprint equals spec's; return True if it was built."""
    out_dir = Path(out_dir)
    fp = fingerprint(spec)
    stamp = out_dir / STAMP
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint") == fp:
                log.info("%s: up to date, reusing %s", name, out_dir)
                return False
        except json.JSONDecodeError:
            pass
    log.info("%s: building %s", name, out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    build()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fp, "spec": spec}, indent=1, ensure_ascii=False, default=str),
                     encoding="utf-8")
    return True
