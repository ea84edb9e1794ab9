"""Atomic, verified DeepSpeed checkpoints.

A checkpoint is written as ``step-00000020.partial`` by every rank through
``engine.save_checkpoint``; rank 0 then records each file's size and sha256 in
``COMPLETE.json`` and renames the folder to ``step-00000020``. A save killed
midway leaves only a ``.partial`` folder, which is never loaded; a folder whose
files no longer match ``COMPLETE.json`` is reported and skipped in favour of
the previous one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch.distributed as dist

log = logging.getLogger("pretrain")
STEP_RE = re.compile(r"^step-(\d{8})$")
MARKER = "COMPLETE.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def save(engine, root: str | Path, step: int, client_state: dict, keep_last: int, rank: int) -> Path:
    root = Path(root)
    tag = tag_for(step)
    partial = f"{tag}.partial"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root / partial, ignore_errors=True)
    dist.barrier()
    engine.save_checkpoint(str(root), tag=partial, client_state=client_state, save_latest=False)
    dist.barrier()
    final = root / tag
    if rank == 0:
        files = {}
        for path in sorted((root / partial).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(root / partial))] = {"size": path.stat().st_size, "sha256": _sha256(path)}
        _write_atomic(root / partial / MARKER, json.dumps({"step": step, "files": files}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(root / partial, final)
        _write_atomic(root / "latest", tag + "\n")
        for old in sorted(valid_tags(root))[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(root / old, ignore_errors=True)
    dist.barrier()
    return final


def valid_tags(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and STEP_RE.match(p.name)) if root.is_dir() else []


def verify(folder: Path) -> str | None:
    """None if the checkpoint folder is intact, else the reason it is not."""
    marker = folder / MARKER
    if not marker.is_file():
        return "no COMPLETE.json (save did not finish)"
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (json.JSONDecodeError, KeyError):
        return "unreadable COMPLETE.json"
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            return f"missing {name}"
        if path.stat().st_size != meta["size"] or _sha256(path) != meta["sha256"]:
            return f"{name} does not match its recorded size/sha256"
    return None


def find_latest(root: str | Path) -> tuple[str, int] | None:
    """Newest intact checkpoint (tag, step); damaged ones are logged and skipped."""
    root = Path(root)
    for tag in reversed(valid_tags(root)):
        problem = verify(root / tag)
        if problem is None:
            return tag, int(STEP_RE.match(tag).group(1))
        log.warning("checkpoint %s is damaged (%s); trying the previous one", root / tag, problem)
    return None


def clean_partials(root: str | Path) -> None:
    root = Path(root)
    if root.is_dir():
        for p in root.glob("*.partial"):
            log.warning("removing unfinished checkpoint %s", p)
            shutil.rmtree(p, ignore_errors=True)
