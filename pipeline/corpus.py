"""Corpus files, in one place: shard paths, manifests, atomic writes, stale-output
removal, input listing and verification.

Remote paths (gs://, s3://, hdfs://) go through Beam's FileSystems, so the corpus pipeline,
the pairs pipeline, the tokenizer and the trainer read and write them as they do local disk;
local paths use the operating system directly (what Beam's local filesystem does too), and
Beam is imported only for a remote path: reading or verifying a local dataset folder (the data
loader's workers, release verification) costs no Beam import (0.7 s).  Input listing
(``pipeline.readers.expand_input``, which the run identity check also calls) still goes
through Beam's glob matching.  A dataset folder is::

    DIR/manifest.json   {"shards": [{"path", "split", "documents", "characters", "bytes", "sha256"}]}
    DIR/train/shard-00000-of-0000N.jsonl.gz   (paths in the manifest are relative to DIR)
    DIR/valid/...
    DIR/stats.json

Manifest paths are confined to DIR (no absolute path, no ``..``), so a manifest
cannot make a reader open files elsewhere.  ``verify(DIR, level)`` checks
sizes (``size``, one metadata call per shard) or sizes and sha256
(``full``, reads every byte); ``off`` skips both.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from typing import Iterable, Iterator, Optional, Sequence

from zlib_ng import gzip_ng

SPLITS = ("train", "valid")
MANIFEST = "manifest.json"
STATS = "stats.json"
VERIFY_LEVELS = ("full", "size", "off")
_TMP = ".tmp-"


class CorpusError(RuntimeError):
    """A missing, unreadable, damaged or unsafe dataset; the message is one line naming the file."""


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------


def _beam():
    """(FileSystems, CompressionTypes.UNCOMPRESSED), imported on first use: remote paths only."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    return FileSystems, CompressionTypes.UNCOMPRESSED


def join(root: str, rel: str) -> str:
    """``root``/``rel`` for a POSIX relative path, on any filesystem."""
    root = str(root)
    if _is_remote(root):
        return _beam()[0].join(root, *rel.split("/"))
    return os.path.join(root, *rel.split("/"))


def shard_path(split: str, index: int, count: int, ext: str = "jsonl.gz") -> str:
    """Path relative to the dataset folder, e.g. train/shard-00000-of-00002.jsonl.gz."""
    return f"{split}/shard-{index:05d}-of-{count:05d}.{ext}"


def confined(data_dir: str, rel: object, where: str) -> str:
    """``data_dir``/``rel`` when ``rel`` is a plain relative path inside the folder; else a CorpusError."""
    bad = (not isinstance(rel, str) or not rel or "\\" in rel or "://" in rel or rel.startswith("/")
           or any(part in ("..", "") for part in rel.split("/")))
    if bad:
        raise CorpusError(f"{where}: shard path {rel!r} is outside the dataset folder (must be relative, without '..')")
    return join(data_dir, rel)


def _is_remote(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """A local path made absolute (workers of other runners do not share our
    working directory); URLs and ``hf:`` specs unchanged."""
    if _is_remote(path) or path.startswith("hf:"):
        return path
    return os.path.abspath(path)


def _real(path: str) -> str:
    if _is_remote(path):
        return path.rstrip("/")
    return os.path.realpath(path)


def _inside(path: str, folder: str) -> bool:
    """Is ``path`` equal to ``folder`` or below it (after resolving local links)?"""
    path, folder = _real(path), _real(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


# --------------------------------------------------------------------------
# Bytes in and out
# --------------------------------------------------------------------------


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file atomically: a unique temporary name, then rename.
    A killed or retried worker never leaves a half-written file under the
    real name, and two workers writing the same file (runners that recompute
    a step) never share a temporary file."""
    tmp = f"{path}{_TMP}{uuid.uuid4().hex[:12]}"
    if not _is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    fs, raw = _beam()
    with fs.create(tmp, mime_type="application/octet-stream", compression_type=raw) as f:
        f.write(data)
    try:
        fs.rename([tmp], [path])
    except Exception:  # filesystems whose rename does not replace (HDFS)
        if fs.exists(path):
            fs.delete([path])
        fs.rename([tmp], [path])


def open_read(path: str):
    """A binary file object for reading, on any filesystem."""
    if not _is_remote(path):
        return open(path, "rb")
    fs, raw = _beam()
    return fs.open(path, compression_type=raw)


def exists(path: str) -> bool:
    return _beam()[0].exists(path) if _is_remote(path) else os.path.exists(path)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    """Deterministic gzip (no file name, mtime=0 in the header) through zlib-ng: the same
    format and, level for level, the same size as zlib, in well under half its time."""
    return gzip_ng.compress(data, level, mtime=0)


def jsonl_bytes(records: Iterable[dict], separators: tuple[str, str] = (", ", ": ")) -> bytes:
    encode = json.JSONEncoder(ensure_ascii=False, separators=separators).encode
    return "".join(encode(r) + "\n" for r in records).encode("utf-8")


def json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json(root: str, name: str, obj: dict) -> None:
    write_bytes(join(root, name), json_bytes(obj))


def read_json(path: str) -> Optional[dict]:
    """The JSON object at ``path``, or None when the file does not exist."""
    if not exists(path):
        return None
    try:
        return json.loads(read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{path}: unreadable JSON ({exc})") from None


def shard_entry(rel: str, split: str, data: bytes, documents: int, characters: int) -> dict:
    """A manifest entry for shard bytes just written."""
    return {"path": rel, "split": split, "documents": documents, "characters": characters,
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_manifest(root: str, entries: Sequence[dict], stats: dict) -> None:
    """manifest.json and stats.json, written last (after every shard)."""
    write_json(root, MANIFEST, {"shards": sorted(entries, key=lambda e: e["path"])})
    write_json(root, STATS, stats)


# --------------------------------------------------------------------------
# Reading a dataset folder
# --------------------------------------------------------------------------


def read_manifest(data_dir: str) -> list[dict]:
    """The manifest's shard entries, each with ``url`` = its confined full path."""
    path = join(data_dir, MANIFEST)
    manifest = read_json(path)
    if manifest is None:
        raise CorpusError(f"{path}: manifest not found (run the data stage first)")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise CorpusError(f"{path}: unreadable manifest (no 'shards' list)")
    entries = []
    for entry in manifest["shards"]:
        if not isinstance(entry, dict) or entry.get("split") not in SPLITS:
            raise CorpusError(f"{path}: bad shard entry {str(entry)[:120]!r} (needs 'path' and split train|valid)")
        entries.append({**entry, "url": confined(data_dir, entry.get("path"), path)})
    return entries


def _sizes(urls: list[str]) -> dict[str, int]:
    if not urls:
        return {}
    found = {url: os.path.getsize(url) for url in urls if not _is_remote(url) and os.path.isfile(url)}
    remote = [url for url in urls if _is_remote(url)]
    if remote:                                  # one metadata call for all of them
        for result in _beam()[0].match(remote):
            for m in result.metadata_list:
                found[m.path] = m.size_in_bytes
    return found


def _check(entries: list[dict], data_dir: str, level: str) -> None:
    if level not in VERIFY_LEVELS:
        raise CorpusError(f"unknown verify level {level!r} (valid: {'|'.join(VERIFY_LEVELS)})")
    manifest = join(data_dir, MANIFEST)
    sizes = _sizes([e["url"] for e in entries])
    for e in entries:
        if e["url"] not in sizes:
            raise CorpusError(f"{e['url']}: shard listed in {manifest} is missing")
        if level == "off":
            continue
        if "bytes" in e and sizes[e["url"]] != e["bytes"]:
            raise CorpusError(f"{e['url']}: {sizes[e['url']]} bytes, {manifest} says {e['bytes']} (damaged or replaced shard)")
        if level == "full" and e.get("sha256"):
            if sha256_file(e["url"]) != e["sha256"]:
                raise CorpusError(f"{e['url']}: sha256 differs from {manifest} (damaged or replaced shard)")


def sha256_file(path: str) -> str:
    """sha256 of a file on any filesystem, read in 1 MiB blocks (the project's one file hash)."""
    h = hashlib.sha256()
    with open_read(str(path)) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(data_dir: str, level: str = "full") -> int:
    """Check every shard of a dataset folder against its manifest; returns the
    number of shards checked.  ``full``: size and sha256 (reads everything,
    for the start of a run); ``size``: existence and size only (cheap);
    ``off``: existence only."""
    return len(shard_entries(data_dir, level))


def shard_entries(data_dir: str, level: str = "size") -> list[dict]:
    """Every manifest entry (with ``url``), checked at ``level``."""
    entries = read_manifest(data_dir)
    _check(entries, data_dir, level)
    return entries


def split_entries(data_dir: str, split: str, level: str = "size") -> list[dict]:
    """Manifest entries (with ``url``) of a split's non-empty shards, in manifest order, checked at ``level``."""
    entries = [e for e in read_manifest(data_dir) if e["split"] == split]
    _check(entries, data_dir, level)
    return [e for e in entries if e.get("documents", 1) > 0]


def list_shards(data_dir: str, split: str, level: str = "size") -> list[str]:
    """Full paths of a split's non-empty shards, in manifest order, checked at ``level``."""
    return [e["url"] for e in split_entries(data_dir, split, level)]


def iter_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every non-blank line of a JSON-lines shard (gzip
    when the name ends in .gz; a truncated gzip file is an error, never a
    silent short read)."""
    try:
        with open_read(path) as raw:
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
            for lineno, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), 1):
                if line.strip():
                    yield lineno, line
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: unreadable shard ({type(exc).__name__}: {exc})") from None


def read_records(path: str) -> Iterator[dict]:
    """The JSON objects of one JSON-lines shard; a broken line is a CorpusError naming it."""
    for lineno, line in iter_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{lineno}: broken JSON line ({exc.msg})") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{path}:{lineno}: not a JSON object")
        yield record


def iter_texts(paths: Iterable[str]) -> Iterator[str]:
    """The ``text`` of every record of the given shards."""
    for path in paths:
        for record in read_records(path):
            yield record["text"]


# --------------------------------------------------------------------------
# Writing a dataset folder
# --------------------------------------------------------------------------


def clear_outputs(root: str) -> None:
    """Remove what an earlier run of a pipeline wrote into ``root`` (manifest
    first, so a killed run never leaves a manifest naming missing shards),
    and nothing else: shards, rejects/*.jsonl.gz, stats, temporary files."""
    patterns = [join(root, MANIFEST), join(root, STATS)]
    patterns += [join(root, f"{split}/shard-*") for split in SPLITS]
    patterns += [join(root, "rejects/*.jsonl.gz"), join(root, f"rejects/*{_TMP}*"), join(root, f"*{_TMP}*")]
    for pattern in patterns:
        if not _is_remote(pattern):
            for path in glob.glob(glob.escape(os.path.dirname(pattern)) + "/" + os.path.basename(pattern)):
                if os.path.isfile(path):
                    os.remove(path)
            continue
        fs = _beam()[0]
        stale = [m.path for r in fs.match([pattern]) for m in r.metadata_list]
        if stale:
            fs.delete(stale)


def check_output_apart(output: str, input_specs: Sequence[str], input_paths: Sequence[str]) -> None:
    """Refuse an output folder that holds an input, or lies inside an input
    folder (clearing it would delete inputs, or the next run would read its own
    output).  Called before anything is deleted."""
    for path in input_paths:
        if not path.startswith("hf:") and _inside(path, output):
            raise CorpusError(f"output {output} contains the input {path}; choose an output folder outside the inputs")
    for spec in input_specs:
        root = _input_root(spec)
        if root and _inside(output, root):
            raise CorpusError(f"output {output} is inside the input {spec}; choose an output folder outside the inputs")


def _input_root(spec: str) -> Optional[str]:
    """The folder an input spec reads recursively (a directory, or the part
    of a ``**`` glob before it), else None."""
    if spec.startswith("hf:"):
        return None
    if "**" in spec:
        head = spec.split("**", 1)[0]
        return head.rstrip("/") or "/"
    if not any(c in spec for c in "*?[") and (os.path.isdir(spec) if not _is_remote(spec) else spec.endswith("/")):
        return spec
    return None


def expand_inputs(specs: Iterable[str]) -> list[str]:
    """Sorted distinct files (absolute paths or URLs) of globs, files,
    directories (recursive, links to folders are listed but never followed,
    so a link loop cannot hang) and ``hf:`` specs; a spec matching nothing is
    a FileNotFoundError."""
    from pipeline import readers

    paths: set[str] = set()
    for spec in specs:
        matched = readers.expand_input(spec)
        if not matched:
            raise FileNotFoundError(f"no input matched {spec!r}")
        paths.update(absolute(p) for p in matched)
    return sorted(paths)


def input_bytes(paths: Sequence[str]) -> int:
    files = [p for p in paths if not p.startswith("hf:")]
    return sum(_sizes(files).values()) if files else 0


# --------------------------------------------------------------------------
# Scratch space
# --------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_tmpdir():
    """Point ``$TMPDIR`` (and Python's tempfile) at a private folder for the
    length of a Beam run and remove it after: Beam leaves temporary folders
    (``beam-temp*``, ``tmp*``, ``beam-requirements-cache``) behind otherwise.
    Worker processes started during the run inherit it."""
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    scratch = tempfile.mkdtemp(prefix="zh-pretrain-beam-")
    os.environ["TMPDIR"] = scratch
    tempfile.tempdir = scratch
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(scratch, ignore_errors=True)
