"""Atomic, verified DeepSpeed checkpoints.

A checkpoint is written as ``step-00000020.partial`` by every rank through
``engine.save_checkpoint``; the ranks then hash the files between them (each file
once), rank 0 records every file's size and sha256 in ``COMPLETE.json`` and renames
the folder to ``step-00000020``. A save killed midway leaves only a ``.partial``
folder, which is never loaded; a folder whose files no longer match ``COMPLETE.json``
is reported and skipped in favour of the previous one. On resume one rank per node
checks the sha256 sums and every other rank the sizes (cheap), and all ranks agree.
A full disk stops the run with one line and leaves the previous checkpoint intact.

Every read of a checkpoint, DeepSpeed's own loaders included, goes through ``safe_loads``: the
pickles are unpickled with ``weights_only=True`` (tensors, plain data and the few DeepSpeed
classes ``_safe_globals`` names), so a tampered file cannot run code.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.corpus import sha256_file

log = logging.getLogger("pretrain")
STEP_RE = re.compile(r"^step-(\d{8,})$")
MARKER = "COMPLETE.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or loaded (one line)."""


@functools.cache
def _safe_globals() -> list:
    """What a DeepSpeed checkpoint pickles besides tensors and plain data (numpy scalars in the RNG
    state, the loss scaler, the ZeRO stage enum, ZeRO's fragment addresses)."""
    import numpy as np
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    core = getattr(np, "_core", None) or np.core      # numpy 2 renamed numpy.core (which now warns)
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, *{type(np.dtype(t)) for t in
            ("uint32", "int64", "float64", "float32", "bool")},
            LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


@contextlib.contextmanager
def safe_loads(where: str | Path):
    """Every ``torch.load`` inside the block, DeepSpeed's too, is ``weights_only=True``.

    DeepSpeed's loaders pass ``weights_only=False``; torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``
    overrides that for the block. Any other pickled type stops with one line.
    """
    saved = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            yield
    except pickle.UnpicklingError as exc:
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(exc))
        what = f"it pickles {found.group(1)}" if found else str(exc).splitlines()[0]
        raise CheckpointError(f"{where}: cannot be read with weights_only=True ({what})") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v



def read(path: Path) -> dict:
    """One checkpoint file (model states, optimizer shard), ``weights_only=True``; a damaged,
    truncated or code-carrying file is one ``CheckpointError`` line."""
    with safe_loads(path):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError) as exc:      # a damaged or truncated file
            raise CheckpointError(f"{path}: cannot be read ({str(exc).splitlines()[0]})") from None



def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def step_of(tag: str) -> int:
    return int(STEP_RE.match(tag).group(1))


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _world()[1] > 1:
        dist.barrier()


def _all_ok(flag: bool) -> bool:
    """True on every rank iff flag is True on every rank."""
    if _world()[1] == 1:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _is_disk_full(exc: BaseException) -> bool:
    text = str(exc)
    return (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or "No space left" in text \
        or "inline_container" in text or "PytorchStreamWriter failed" in text


def _hash_share(folder: Path, rank: int, world: int) -> dict:
    """size and sha256 of this rank's share of the folder's files (file i goes to rank i % world)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for i, p in enumerate(files) if i % world == rank}


def save(engine, root: str | Path, step: int, client_state: dict, keep_last: int, rank: int,
         layout: dict | None = None) -> Path:
    """Save atomically; ``layout`` (e.g. ZeRO stage, optimizer) goes into COMPLETE.json with the world size."""
    root = Path(root)
    tag = tag_for(step)
    partial = root / f"{tag}.partial"
    _, world = _world()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    _barrier()
    error = None
    try:
        engine.save_checkpoint(str(root), tag=partial.name, client_state=client_state, save_latest=False)
    except (OSError, RuntimeError) as exc:
        error = exc
    if not _all_ok(error is None):
        written = _folder_mb(partial)
        if rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        tags = valid_tags(root)
        kept = f"the previous checkpoint {tags[-1]} is intact" if tags else "no checkpoint was written yet"
        if error is not None and _is_disk_full(error) or _free_mb(root) < 1:
            need = max(written, _folder_mb(root / tags[-1]) if tags else 0.0)
            raise CheckpointError(f"no space left on {root} (a checkpoint needs more than {need:.0f} MB, "
                                  f"{_free_mb(root):.0f} MB free); {kept}") from None
        raise CheckpointError(f"{partial}: checkpoint save failed ({error or 'on another rank'}); {kept}") from None
    _barrier()
    shares = [_hash_share(partial, rank, world)]
    if world > 1:
        shares = [None] * world
        dist.all_gather_object(shares, _hash_share(partial, rank, world))
    final = root / tag
    if rank == 0:
        files = {k: v for share in shares for k, v in share.items()}
        _write_atomic(partial / MARKER, json.dumps({"step": step, "world_size": world, **(layout or {}),
                                                    "files": dict(sorted(files.items()))}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        _write_atomic(root / "latest", tag + "\n")
        prune(root, step, keep_last)
    _barrier()
    return final


def prune(root: Path, step: int, keep_last: int) -> None:
    """Keep the ``keep_last`` newest checkpoints up to ``step`` (by step number); never the one just
    written, nor any newer folder (a damaged later checkpoint is overwritten when training gets there)."""
    if keep_last <= 0:
        return
    older = sorted((step_of(t), t) for t in valid_tags(root) if step_of(t) < step)
    for _, old in older[:max(0, len(older) - (keep_last - 1))]:
        shutil.rmtree(root / old, ignore_errors=True)


def _free_mb(root: Path) -> float:
    probe = root if root.exists() else root.parent
    return shutil.disk_usage(probe).free / 1e6 if probe.exists() else 0.0


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6 if folder.is_dir() else 0.0


def valid_tags(root: Path) -> list[str]:
    """Checkpoint folders, oldest first (by step number)."""
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if p.is_dir() and STEP_RE.match(p.name)), key=step_of)


def verify(folder: Path, full: bool = True) -> str | None:
    """None if the checkpoint folder is intact, else the reason it is not (sizes only unless ``full``)."""
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
        if path.stat().st_size != meta["size"]:
            return f"{name} does not match its recorded size"
    if full:
        for name, meta in files.items():
            if sha256_file(folder / name) != meta["sha256"]:
                return f"{name} does not match its recorded sha256"
    return None


def saved_layout(folder: Path) -> dict:
    """What a checkpoint was saved with: ``world_size`` and, since elastic resume, ``zero_stage``, ``optimizer``."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    layout = {k: marker[k] for k in ("world_size", "zero_stage", "optimizer") if k in marker}
    if "zero_stage" not in layout:          # saved before layouts were recorded: its files tell
        layout["zero_stage"] = (3 if any(folder.glob("zero_pp_rank_*_model_states.pt")) else
                                2 if any(folder.glob("*_optim_states.pt")) else 0)
    return layout


def find_latest(root: str | Path, local_rank: int = 0) -> tuple[str, int] | None:
    """Newest intact checkpoint (tag, step), agreed by all ranks; damaged ones are logged and skipped.

    Local rank 0 of each node checks sha256 sums, the other ranks sizes. If checkpoints
    exist but none is intact, stop: silently starting over would mix two runs.
    """
    root = Path(root)
    tags = valid_tags(root)
    damaged = []
    for tag in reversed(tags):
        problem = verify(root / tag, full=local_rank == 0)
        if _all_ok(problem is None):
            return tag, step_of(tag)
        damaged.append(f"{tag} ({problem or 'damaged on another node'})")
        if _world()[0] == 0:
            log.warning("checkpoint %s is damaged (%s); trying the previous one", root / tag, problem)
    if damaged:
        raise CheckpointError(f"every checkpoint in {root} is damaged: {'; '.join(damaged)}. To start over "
                              f"deliberately, move {root} away (or use a new RUN)")
    return None


def clean_partials(root: str | Path) -> None:
    root = Path(root)
    if root.is_dir():
        for p in root.glob("*.partial"):
            log.warning("removing unfinished checkpoint %s", p)
            shutil.rmtree(p, ignore_errors=True)
