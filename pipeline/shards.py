"""Split, shard and write: deterministic train/valid split and shard files.

Split and shard index come from a blake2b hash of (id, text key), never from
Python's ``hash()`` (salted per process), and shards are sorted by id and
gzip-compressed with ``mtime=0``, so re-runs, any worker count and any
runner give byte-identical files and identical manifest checksums.  Files are
written through ``pipeline.corpus`` (atomic, any Beam filesystem).
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring
import io
import math
import posixpath
from typing import Iterable

from pipeline.corpus import SPLITS, gzip_bytes, join, jsonl_bytes, shard_entry, shard_path, write_bytes


def doc_hash(doc_id: str, key: str) -> tuple[float, int]:
    """(uniform value in [0, 1) for the split, 64-bit value for the shard)."""
    digest = hashlib.blake2b(f"{doc_id}\x00{key}".encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64, int.from_bytes(digest[8:], "big")


class SplitPlan:
    """Global split/shard decisions from the document count.

    * valid = documents whose split value is < ``valid_fraction``; when that is
      empty but there are ≥ ``min_docs_for_valid`` documents, the one with the
      smallest split value goes to valid (so valid is never empty then).
    * train shards: ``num_shards`` or ceil(train / max_docs_per_shard); valid
      shards: ceil(valid / max_docs_per_shard); at least 1 each.
    """

    @staticmethod
    def create_accumulator():
        return (0, 0, None)  # total, valid, smallest (value, key)

    @staticmethod
    def add(acc, item, valid_fraction):
        total, valid, smallest = acc
        value, key = item
        return (total + 1, valid + (value < valid_fraction), min(smallest, item) if smallest else item)

    @staticmethod
    def add_all(acc, items, valid_fraction):
        """Adds the documents of a batch of (key, id) items."""
        for key, doc_id in items:
            acc = SplitPlan.add(acc, (doc_hash(doc_id, key)[0], key), valid_fraction)
        return acc

    @staticmethod
    def merge(accs):
        total = valid = 0
        smallest = None
        for t, v, s in accs:
            total += t
            valid += v
            if s is not None and (smallest is None or s < smallest):
                smallest = s
        return (total, valid, smallest)

    @staticmethod
    def finish(acc, cfg: dict) -> dict:
        total, valid, smallest = acc
        forced = None
        if valid == 0 and smallest is not None and total >= cfg.get("min_docs_for_valid", 20) and cfg["valid_fraction"] > 0:
            forced = smallest[1]
            valid = 1
        train = total - valid
        per = max(1, int(cfg.get("max_docs_per_shard") or 100_000))
        n_train = int(cfg.get("num_shards") or max(1, math.ceil(train / per)))
        n_valid = max(1, math.ceil(valid / per))
        return {"total": total, "train": train, "valid": valid, "forced_valid_key": forced,
                "shards": {"train": n_train, "valid": n_valid}}


def assign_split(doc_id: str, key: str, plan: dict, valid_fraction: float) -> tuple[str, int]:
    """(split, shard index) of one document under a plan."""
    value, shard_value = doc_hash(doc_id, key)
    split = "valid" if value < valid_fraction or key == plan["forced_valid_key"] else "train"
    return split, shard_value % plan["shards"][split]


_FIXED = ("id", "text", "source")
_encode_fields = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def _field_items(fields: dict) -> str:
    """``_encode_fields(fields)[1:-1]``, written directly for the values the checks record
    (strings, finite floats, ints, booleans, None): a third of the encoder's time."""
    parts = []
    for k, v in fields.items():
        t = type(v)
        if type(k) is not str:
            return _encode_fields(fields)[1:-1]
        if t is str:
            parts.append(f"{encode_basestring(k)}: {encode_basestring(v)}")
        elif (t is float and math.isfinite(v)) or t is int:
            parts.append(f"{encode_basestring(k)}: {v!r}")
        elif t is bool or v is None:
            parts.append(f"{encode_basestring(k)}: {'null' if v is None else 'true' if v else 'false'}")
        else:                          # inf/NaN, lists, dicts, numpy scalars: the encoder's way
            return _encode_fields(fields)[1:-1]
    return ", ".join(parts)


def shard_lines(docs: list) -> bytes:
    """The JSON lines of (id, text, key, source[, fields]) documents: the bytes ``jsonl_bytes``
    writes for ``{"id", "text", "source", **fields}``, with the three strings escaped directly
    (half the time of encoding a dict per line)."""
    out = []
    for d in docs:
        fields = d[4] if len(d) > 4 else None
        if fields and any(k in fields for k in _FIXED):
            out.append(_encode_fields({"id": d[0], "text": d[1], "source": d[3], **fields}))
            continue
        try:
            line = f'{{"id": {encode_basestring(d[0])}, "text": {encode_basestring(d[1])}, "source": {encode_basestring(d[3])}'
        except TypeError:           # a value that is not a string: the general encoder
            out.append(_encode_fields({"id": d[0], "text": d[1], "source": d[3], **(fields or {})}))
            continue
        out.append(f"{line}, {_field_items(fields)}}}" if fields else line + "}")
    out.append("")
    return "\n".join(out).encode("utf-8")


def write_shard(output: str, split: str, index: int, count: int, docs: Iterable[tuple],
                gzip_level: int = 6, parquet: bool = False) -> dict:
    """Write one shard of (id, text, key, source[, fields]) documents as ``{"id", "text", "source",
    **fields}`` lines sorted by (id, key) (fields: what the quality checks record, e.g. ``lang``,
    ``ppl``, ``quality_bucket``, ``contaminated``); returns its manifest entry."""
    docs = sorted(docs, key=lambda d: (d[0], d[2]))
    rel = shard_path(split, index, count)
    data = gzip_bytes(shard_lines(docs), gzip_level)
    write_bytes(join(output, rel), data)
    entry = shard_entry(rel, split, data, len(docs), sum(len(d[1]) for d in docs))
    if parquet:
        entry["parquet"] = write_parquet_shard(output, split, index, count, docs)
    return entry


def write_parquet_shard(output: str, split: str, index: int, count: int, docs: list) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [d[0] for d in docs], "text": [d[1] for d in docs], "source": [d[3] for d in docs],
                      "fields": [json.dumps(d[4] if len(d) > 4 else {}, ensure_ascii=False) for d in docs]})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    rel = shard_path(split, index, count, "parquet")
    write_bytes(join(output, rel), data)
    return {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_rejects(output: str, reason: str, rejects: Iterable[tuple], gzip_level: int = 6) -> tuple[str, int]:
    """rejects/<reason>.jsonl.gz, sorted by (source, line, id)."""
    rows = sorted(rejects, key=lambda r: (r[2], r[3], r[1]))
    records = []
    for reason_, rid, source, line, text, kept in rows:
        rec = {"id": rid, "reason": reason_, "source": source, "line": line, "text": text}
        if kept is not None:
            rec["kept_id"] = kept
        records.append(rec)
    rel = f"rejects/{reason}.jsonl.gz"
    write_bytes(join(output, rel), gzip_bytes(jsonl_bytes(records), gzip_level))
    return reason, len(rows)


def build_stats(read: int, reject_counts: dict, manifest_entries: list, input_bytes: int = 0) -> dict:
    """stats.json: every read record is written, rejected or a duplicate."""
    rejected = {k: v for k, v in reject_counts.items() if not k.startswith("duplicate_")}
    written = sum(e["documents"] for e in manifest_entries)
    stats = {
        "read": read,
        "written": written,
        "rejected": dict(sorted(rejected.items())),
        "duplicates_exact": reject_counts.get("duplicate_exact", 0),
        "duplicates_near": reject_counts.get("duplicate_near", 0),
        "written_by_split": {s: sum(e["documents"] for e in manifest_entries if e["split"] == s) for s in SPLITS},
        "characters": sum(e["characters"] for e in manifest_entries),
        "input_bytes": input_bytes,
    }
    stats["accounted"] = (
        read == written + sum(stats["rejected"].values()) + stats["duplicates_exact"] + stats["duplicates_near"]
    )
    return stats


def id_census(items: Iterable[tuple]) -> tuple[list[tuple[str, str, str]], dict]:
    """Written documents ``(key, id, source, line)`` → ``(renames, counts)``.

    Every id carried by more than one document is qualified, on each of
    them, as ``id@<file basename>:<line>`` (the full source when basenames
    clash; then ``#<text hash>`` if still equal), so ids are unique across the
    corpus and the choice depends on nothing but the documents.  ``renames``
    are ``(key, id, new id)``; ``counts[source]`` has ``within_file`` (its
    documents whose id another document of the same file carries) and
    ``across_files`` (its documents whose id a document of another file
    carries)."""
    by_id: dict[str, list] = {}
    for key, doc_id, source, line in items:
        by_id.setdefault(doc_id, []).append((source, line, key))
    renames, counts = [], {}
    for doc_id, group in by_id.items():
        if len(group) < 2:
            continue
        group.sort()
        per_file: dict[str, int] = {}
        for source, _, _ in group:
            per_file[source] = per_file.get(source, 0) + 1
        labels = [f"{posixpath.basename(s.rstrip('/'))}:{line}" for s, line, _ in group]
        if len(set(labels)) < len(labels):
            labels = [f"{s}:{line}" for s, line, _ in group]
        if len(set(labels)) < len(labels):
            labels = [f"{label}#{key[:12]}" for label, (_, _, key) in zip(labels, group)]
        for (source, _, key), label in zip(group, labels):
            renames.append((key, doc_id, f"{doc_id}@{label}"))
            c = counts.setdefault(source, {"within_file": 0, "across_files": 0})
            c["within_file"] += per_file[source] > 1
            c["across_files"] += len(per_file) > 1
    return sorted(renames), counts


def merge_id_counts(parts: Iterable[dict]) -> dict:
    """Per-file duplicate-id counts of several partitions, summed, sorted by file."""
    total: dict[str, dict] = {}
    for part in parts:
        for source, c in part.items():
            t = total.setdefault(source, {"within_file": 0, "across_files": 0})
            for k in t:
                t[k] += c[k]
    return dict(sorted(total.items()))
