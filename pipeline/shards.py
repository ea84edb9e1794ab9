"""Split, shard and write: deterministic train/valid split and shard files.

Split and shard index come from a blake2b hash of (id, text key), never from
Python's ``hash()`` (salted per process), and shards are sorted by id and
gzip-compressed with ``mtime=0``, so re-runs and any worker count give
byte-identical files and identical manifest checksums.  Files are written
through Beam's FileSystems (temp name, then rename), so the same code writes
to local disk, GCS, S3 or HDFS.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
from typing import Iterable, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

SPLITS = ("train", "valid")


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


def shard_path(split: str, index: int, count: int, ext: str = "jsonl.gz") -> str:
    """Path relative to the output folder, e.g. train/shard-00000-of-00002.jsonl.gz."""
    return f"{split}/shard-{index:05d}-of-{count:05d}.{ext}"


def join_path(root: str, rel: str) -> str:
    return FileSystems.join(root, *rel.split("/"))


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file through FileSystems: temp name then rename, so a
    retried or killed worker never leaves a half-written shard behind."""
    tmp = path + ".tmp"
    if FileSystems.exists(tmp):
        FileSystems.delete([tmp])
    with FileSystems.create(tmp, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    """Deterministic gzip: no file name and mtime=0 in the header."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=level, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def jsonl_bytes(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, separators=(", ", ": ")) + "\n" for r in records).encode("utf-8")


def write_shard(output: str, split: str, index: int, count: int, docs: Iterable[tuple],
                gzip_level: int = 6, parquet: bool = False) -> dict:
    """Write one shard of (id, text, key) documents sorted by (id, key); returns
    its manifest entry."""
    docs = sorted(docs, key=lambda d: (d[0], d[2]))
    rel = shard_path(split, index, count)
    data = gzip_bytes(jsonl_bytes({"id": d[0], "text": d[1]} for d in docs), gzip_level)
    write_bytes(join_path(output, rel), data)
    entry = {
        "path": rel,
        "split": split,
        "documents": len(docs),
        "characters": sum(len(d[1]) for d in docs),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if parquet:
        entry["parquet"] = write_parquet_shard(output, split, index, count, docs)
    return entry


def write_parquet_shard(output: str, split: str, index: int, count: int, docs: list) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [d[0] for d in docs], "text": [d[1] for d in docs]})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    rel = shard_path(split, index, count, "parquet")
    write_bytes(join_path(output, rel), data)
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest()}


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
    write_bytes(join_path(output, rel), gzip_bytes(jsonl_bytes(records), gzip_level))
    return reason, len(rows)


def write_json(output: str, name: str, obj: dict) -> None:
    write_bytes(join_path(output, name), (json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8"))


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


def read_json(path: str) -> Optional[dict]:
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return json.loads(f.read().decode("utf-8"))
