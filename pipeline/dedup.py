"""Deduplication: exact (hash of normalized text) and near (MinHash LSH).

Pure functions first (normalization, shingle hashing, MinHash signatures, LSH
band keys, cluster resolution), then the Beam transforms built from them:

* ``ExactDedup``: GroupByKey on (a partition of) the normalized-text hash;
  one document per hash survives (smallest id), the others become
  ``duplicate_exact`` rejects.
* ``NearDuplicateClusters``: MinHash over character n-grams; GroupByKey on
  (partitions of) the LSH bucket ids → candidate pairs → CoGroupByKey with
  the signatures (by key partition), GroupByKey per pair → keep pairs whose estimated Jaccard ≥ threshold → connected components
  (union-find over the verified edges, which are few) → a map from every
  dropped document key to the id of its cluster's kept document, used as a
  side input.  The kept document is chosen deterministically: longest text,
  then smallest id (``keep: longest``), or smallest id (``keep: smallest_id``).

Documents are keyed by ``key`` = hash of the normalized text, unique after
exact dedup, so duplicate input ids cannot confuse the clustering.
"""

from __future__ import annotations

import hashlib
import re
from itertools import combinations
from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np

from pipeline.filters import ngram_hashes

_WS_RE = re.compile(r"\s+")
# Punctuation/symbols ignored by near-dedup shingles, so that re-punctuated
# copies still match.
_PUNCT_RE = re.compile(r"[\W_]+")


def normalize_for_hash(text: str) -> str:
    """Normalization behind the exact-duplicate key: case and whitespace only."""
    return _WS_RE.sub("", text).lower()


def exact_key(text: str) -> str:
    """Hex digest identifying a document's normalized text."""
    return hashlib.blake2b(normalize_for_hash(text).encode("utf-8"), digest_size=16).hexdigest()


# --------------------------------------------------------------------------
# MinHash
# --------------------------------------------------------------------------


def minhash_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiply-shift hash family ``(a*x + b) >> 32`` over uint64 (wraps):
    ``a`` odd.  Drawn from a seeded numpy Generator, so identical everywhere."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


_PAD = "\U0010ffff"  # a noncharacter: pads texts shorter than n to one n-gram
_MASK32 = np.uint64(0xFFFFFFFF)


def _normalize_for_shingles(text: str, n: int) -> str:
    text = _PUNCT_RE.sub("", text.lower())
    return text if len(text) >= n else text + _PAD * (n - len(text))


def _mix32(h: np.ndarray) -> np.ndarray:
    """splitmix-style finalizer, low 32 bits: well-spread shingle values."""
    h = h ^ (h >> np.uint64(29))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    return (h ^ (h >> np.uint64(32))) & _MASK32


def shingle_hashes(text: str, n: int = 5) -> np.ndarray:
    """Distinct 32-bit hashes (as uint64) of the character n-grams of the text
    lowercased, with whitespace and punctuation removed (texts shorter than n
    are one padded n-gram)."""
    text = _normalize_for_shingles(text, n)
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.unique(_mix32(ngram_hashes(cp, n)))


def minhash_signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = 4096) -> np.ndarray:
    """uint32 MinHash signature of one shingle set: for every permutation, the
    minimum of ``(a*x + b) >> 32`` (processed in blocks to bound memory)."""
    sig = np.full(len(a), np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(shingles), block):
        x = shingles[start : start + block]
        values = np.multiply.outer(a, x)
        values += b[:, None]
        values >>= np.uint64(32)
        np.minimum(sig, values.min(axis=1), out=sig)
    return sig.astype(np.uint32)


def minhash_signatures(texts: list[str], n: int, a: np.ndarray, b: np.ndarray, max_windows: int = 1024) -> np.ndarray:
    """(len(texts), num_perm) uint32 signatures, vectorized across documents:
    the n-grams of a group of documents are hashed in one pass over their
    concatenation and reduced per document with ``np.minimum.reduceat``, so
    short documents do not pay numpy's per-call overhead.  Equal, row by row,
    to ``minhash_signature(shingle_hashes(text, n), a, b)`` (the min over a
    multiset is the min over the set)."""
    norm = [_normalize_for_shingles(t, n) for t in texts]
    out = np.empty((len(norm), len(a)), dtype=np.uint32)
    i = 0
    while i < len(norm):
        j, total = i, 0
        while j < len(norm) and (j == i or total + len(norm[j]) - n + 1 <= max_windows):
            total += len(norm[j]) - n + 1
            j += 1
        if j - i == 1:
            cp = np.frombuffer(norm[i].encode("utf-32-le"), dtype=np.uint32)
            out[i] = minhash_signature(_mix32(ngram_hashes(cp, n)), a, b)
        else:
            group = norm[i:j]
            cp = np.frombuffer("".join(group).encode("utf-32-le"), dtype=np.uint32)
            lengths = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
            starts = np.cumsum(lengths) - lengths
            windows = lengths - n + 1
            seg = np.cumsum(windows) - windows
            offset = np.arange(int(windows.sum()), dtype=np.int64) - np.repeat(seg, windows)
            x = _mix32(ngram_hashes(cp, n))[np.repeat(starts, windows) + offset]
            values = np.multiply.outer(x, a)  # (windows, perms), in place: cache-friendly
            values += b
            values >>= np.uint64(32)
            out[i:j] = np.minimum.reduceat(values, seg, axis=0)
        i = j
    return out


def band_keys(signature: np.ndarray, bands: int) -> list[bytes]:
    """One LSH bucket key per band: band index + that band's rows."""
    rows = len(signature) // bands
    raw = signature[: rows * bands].astype("<u4").tobytes()
    width = rows * 4
    return [bytes([i]) + raw[i * width : (i + 1) * width] for i in range(bands)]


def estimated_jaccard(sig_a: bytes, sig_b: bytes) -> float:
    a = np.frombuffer(sig_a, dtype="<u4")
    b = np.frombuffer(sig_b, dtype="<u4")
    return float(np.count_nonzero(a == b)) / len(a)


def true_jaccard(text_a: str, text_b: str, n: int = 5) -> float:
    """Exact Jaccard of the shingle sets (for tests and diagnostics)."""
    a = set(shingle_hashes(text_a, n).tolist())
    b = set(shingle_hashes(text_b, n).tolist())
    return len(a & b) / len(a | b) if a or b else 1.0


# --------------------------------------------------------------------------
# Candidate pairs and clusters
# --------------------------------------------------------------------------

# A node is (sort_key, key, id): sort_key orders "which document to keep".


def node_sort_key(doc_id: str, chars: int, key: str, keep: str = "longest") -> tuple:
    return (-chars, doc_id, key) if keep == "longest" else (doc_id, key)


def bucket_pairs(nodes: Iterable[tuple], max_bucket_size: int = 100) -> Iterator[tuple]:
    """Candidate pairs (smaller node first) in one LSH bucket: all pairs, or a
    star around the first node when the bucket is larger than the limit."""
    nodes = sorted(set(nodes))
    if len(nodes) < 2:
        return
    if len(nodes) <= max_bucket_size:
        yield from combinations(nodes, 2)
    else:
        first = nodes[0]
        for other in nodes[1:]:
            yield (first, other)


def resolve_clusters(edges: Iterable[tuple]) -> list[tuple[str, str]]:
    """Union-find over verified edges; returns ``(dropped key, kept id)`` for
    every non-representative node.  The representative is the smallest node
    (by its sort key), so the choice does not depend on edge order."""
    parent: dict = {}

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for u, v in edges:
        parent.setdefault(u, u)
        parent.setdefault(v, v)
        ru, rv = find(u), find(v)
        if ru != rv:
            if rv < ru:
                ru, rv = rv, ru
            parent[rv] = ru
    out = []
    for node in parent:
        root = find(node)
        if root != node:
            out.append((node[1], root[2]))
    return sorted(out)


# --------------------------------------------------------------------------
# Beam transforms.  PCollections carry *batches* (lists) of keyed documents
# ``(key, (id, text, source, line))`` so that per-element runner overhead is
# paid per batch, not per document; shuffles go to a fixed number of hash
# partitions, each resolved in memory by one worker.  Rejects are single
# elements ``(reason, id, source, line, snippet, kept_id)``.
# --------------------------------------------------------------------------


def partition_of(key: str, partitions: int) -> int:
    """Stable partition of a hex key (the first 8 hex digits, mod n)."""
    return int(key[:8], 16) % partitions


def _split_by_partition(batch, partitions: int) -> Iterator[tuple[int, list]]:
    parts: dict[int, list] = {}
    for item in batch:
        parts.setdefault(partition_of(item[0], partitions), []).append(item)
    yield from parts.items()


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _exact_partition(item, snippet_chars: int, batch_size: int) -> Iterator[Any]:
    """All documents of one key partition → kept batches + duplicate rejects.
    Within a key the smallest (id, source, line) is kept."""
    _, sub_batches = item
    best: dict[str, tuple] = {}
    dups = []
    for batch in sub_batches:
        for key, doc in batch:
            kept = best.get(key)
            if kept is None:
                best[key] = doc
            elif (doc[0], doc[2], doc[3]) < (kept[0], kept[2], kept[3]):
                dups.append((key, kept))
                best[key] = doc
            else:
                dups.append((key, doc))
    for key, d in dups:
        yield beam.pvalue.TaggedOutput(
            "rejects", ("duplicate_exact", d[0], d[2], d[3], d[1][:snippet_chars], best[key][0])
        )
    yield from _chunks(sorted(best.items()), batch_size)


class ExactDedup(beam.PTransform):
    """Keyed-doc batches → kept batches (one document per normalized-text
    hash) + ``rejects`` (``duplicate_exact``, naming the kept id)."""

    def __init__(self, snippet_chars: int = 300, partitions: int = 16, batch_size: int = 1000):
        super().__init__()
        self.snippet_chars = snippet_chars
        self.partitions = partitions
        self.batch_size = batch_size

    def expand(self, batches):
        return (
            batches
            | "PartitionByTextHash" >> beam.FlatMap(_split_by_partition, self.partitions)
            | "GroupPartitions" >> beam.GroupByKey()
            | "KeepFirst"
            >> beam.FlatMap(_exact_partition, self.snippet_chars, self.batch_size).with_outputs("rejects", main="docs")
        )


def band_hashes(sigs: np.ndarray, bands: int) -> np.ndarray:
    """(docs, bands) uint64 LSH bucket ids: a 64-bit hash of each band's rows
    and the band index (collisions between different bands: ~n²/2⁶⁴)."""
    rows = sigs.shape[1] // bands
    banded = sigs[:, : rows * bands].reshape(len(sigs), bands, rows).astype(np.uint64)
    h = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15), banded.shape[:2]).copy()
    for k in range(rows):
        h = h * np.uint64(0xBF58476D1CE4E5B9) + banded[:, :, k]
    return _mix64(h)


def _mix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(31))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(29))


class _MinHashFn(beam.DoFn):
    """Keyed-doc batch → MinHash signatures, emitted compactly per partition:

    * ``bands``: (partition, (bucket ids as uint64 bytes, 16-byte doc keys))
      partitioned by bucket id;
    * ``sigs``: (partition, [(key, signature bytes, id, chars)]) partitioned
      by document key, for verifying candidate pairs.
    """

    def __init__(self, cfg: dict, partitions: int):
        self.cfg = cfg
        self.partitions = partitions

    def setup(self):
        self.a, self.b = minhash_params(self.cfg["num_perm"], self.cfg["seed"])

    def process(self, batch) -> Iterator[Any]:
        cfg, parts = self.cfg, self.partitions
        sigs = minhash_signatures([doc[1] for _, doc in batch], cfg["ngram"], self.a, self.b)
        buckets = band_hashes(sigs, cfg["bands"])  # (docs, bands)
        # 16-byte keys as (hi, lo) uint64 pairs ("S16" would drop trailing NULs)
        keys = np.frombuffer(b"".join(bytes.fromhex(key) for key, _ in batch), dtype=">u8").reshape(-1, 2)
        flat = buckets.ravel()
        owner = np.repeat(np.arange(len(batch)), buckets.shape[1])
        part = (flat % np.uint64(parts)).astype(np.int64)
        for p in np.unique(part):
            mask = part == p
            yield (int(p), (flat[mask].tobytes(), keys[owner[mask]].tobytes()))
        by_key: dict[int, list] = {}
        for (key, doc), sig in zip(batch, sigs):
            by_key.setdefault(partition_of(key, parts), []).append((key, sig.tobytes(), doc[0], len(doc[1])))
        for p, entries in by_key.items():
            yield beam.pvalue.TaggedOutput("sigs", (p, entries))


def _bucket_partition(item, max_bucket_size: int) -> Iterator[tuple]:
    """One partition of LSH bucket entries → candidate key pairs: sort by
    bucket id, and pair up the keys of every bucket holding two or more."""
    _, blobs = item
    blobs = list(blobs)
    ids = np.concatenate([np.frombuffer(b[0], dtype=np.uint64) for b in blobs])
    keys = np.concatenate([np.frombuffer(b[1], dtype=">u8").reshape(-1, 2) for b in blobs])
    order = np.lexsort((keys[:, 1], keys[:, 0], ids))
    ids, keys = ids[order], keys[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)])
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
        members = sorted({f"{hi:016x}{lo:016x}" for hi, lo in keys[start : start + size].tolist()})
        yield from bucket_pairs(members, max_bucket_size)


def _pair_endpoints(pair, partitions: int):
    for key in pair:
        yield (partition_of(key, partitions), (key, pair))


def _attach_signatures(item) -> Iterator[tuple]:
    """Per key partition: join candidate-pair endpoints with the signatures."""
    _, grouped = item
    wanted: dict[str, list] = {}
    for key, pair in grouped["pair"]:
        wanted.setdefault(key, []).append(pair)
    if not wanted:
        return
    for entries in grouped["sig"]:
        for key, sig, doc_id, chars in entries:
            for pair in wanted.get(key, ()):
                yield (pair, (key, sig, doc_id, chars))


def _verify(item, threshold: float, keep: str):
    """Both signatures of a candidate pair → an edge between two nodes
    ``(sort key, doc key, id)`` when the estimated Jaccard is high enough."""
    _, ends = item
    ends = sorted(ends)
    if len(ends) == 2 and estimated_jaccard(ends[0][1], ends[1][1]) >= threshold:
        yield tuple((node_sort_key(doc_id, chars, key, keep), key, doc_id) for key, _, doc_id, chars in ends)


class NearDuplicateClusters(beam.PTransform):
    """Keyed-doc batches → PCollection of (dropped key, kept id), one per near
    duplicate to drop.  Use it as a ``beam.pvalue.AsDict`` side input."""

    def __init__(self, cfg: dict, partitions: int = 16):
        super().__init__()
        self.cfg = cfg
        self.partitions = partitions

    def expand(self, batches):
        cfg = self.cfg
        hashed = batches | "MinHash" >> beam.ParDo(_MinHashFn(cfg, self.partitions)).with_outputs("sigs", main="bands")
        pairs = (
            hashed.bands
            | "GroupBucketPartitions" >> beam.GroupByKey()
            | "BucketPairs" >> beam.FlatMap(_bucket_partition, cfg.get("max_bucket_size", 100))
            | "DistinctPairs" >> beam.Distinct()
        )
        endpoints = pairs | "PairEndpoints" >> beam.FlatMap(_pair_endpoints, self.partitions)
        return (
            {"sig": hashed.sigs, "pair": endpoints}
            | "JoinSignatures" >> beam.CoGroupByKey()
            | "AttachSignatures" >> beam.FlatMap(_attach_signatures)
            | "GroupPairSignatures" >> beam.GroupByKey()
            | "VerifyJaccard" >> beam.FlatMap(_verify, cfg["threshold"], cfg.get("keep", "longest"))
            | "AllEdges" >> beam.combiners.ToList()
            | "ConnectedComponents" >> beam.FlatMap(resolve_clusters)
        )
