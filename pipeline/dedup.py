"""Deduplication: exact (hash of normalized text) and near (MinHash LSH).

Pure functions first (normalization, shingle hashing, MinHash signatures, LSH
candidate pairs, pair verification, cluster resolution), each working on a
whole batch or partition as numpy arrays, then the Beam transforms built
from them (the benchmark's plain loop calls the same functions on the whole
corpus at once):

* ``ExactDedup``: GroupByKey on (a partition of) the normalized-text hash;
  one document per hash survives (smallest id), the others become
  ``duplicate_exact`` rejects.
* ``NearDuplicates``: MinHash over character n-grams; GroupByKey on
  (partitions of) the LSH bucket ids → candidate pairs → CoGroupByKey with
  the signatures (by key partition) → GroupByKey of both halves of each pair
  → keep pairs whose estimated Jaccard ≥ threshold (the edges) → for every
  edge, its lower-ranked document is a drop candidate, routed to the
  partition of its key.
* ``Survivors``: CoGroupByKey of the documents' keys with the drop
  candidates, by key partition: a document is dropped when a verified near
  duplicate ranks above it under ``keep`` (longest text, then smallest id, or
  smallest id); its ``kept_id`` is the highest-ranked such neighbour.

Nothing is gathered on one key or broadcast: every shuffle is by hash
partition, so the memory of a step grows with its partition, not with the
corpus.  The rule differs from connected components (keep one document per
cluster) only on chains: with A ~ B and B ~ C but A !~ C, ranked A > C > B,
components drop C too (it is in A's cluster); the rule keeps C, which is
near no document ranked above it.  The rule drops a subset of what
components drop, and never keeps two documents that are near duplicates of
each other.

Documents are keyed by ``key`` = hash of the normalized text, unique after
exact dedup, so duplicate input ids cannot confuse the clustering.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator, NamedTuple

import apache_beam as beam
import numpy as np

from pipeline.charhash import alnum_table, codepoints
from pipeline.events import DOCS, REJECTS, Select
from pipeline.filters import ngram_hashes
from pipeline.progress import Progress


def normalize_for_hash(text: str) -> str:
    """Normalization behind the exact-duplicate key: case and whitespace only."""
    return "".join(text.split()).lower()     # str.split() splits on exactly the characters of \s, twice as fast


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


def _mix32(h: np.ndarray) -> np.ndarray:
    """splitmix-style finalizer, low 32 bits: well-spread shingle values."""
    h = h ^ (h >> np.uint64(29))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    return (h ^ (h >> np.uint64(32))) & _MASK32


def shingle_hashes(text: str, n: int = 5) -> np.ndarray:
    """Distinct 32-bit hashes (as uint64) of the character n-grams of the text
    lowercased, with whitespace and punctuation removed (texts shorter than n
    are one padded n-gram)."""
    cp, _ = _shingle_codepoints([text], n)
    return np.unique(_mix32(ngram_hashes(cp, n)))


def minhash_signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = 4096) -> np.ndarray:
    """uint32 MinHash signature of one shingle set: for every permutation, the
    minimum of ``(a*x + b) >> 32`` (processed in blocks to bound memory)."""
    sig = np.full(len(a), np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(shingles), block):
        x = shingles[start : start + block]
        values = np.multiply.outer(a, x)
        values += b[:, None]
        np.minimum(sig, values.min(axis=1), out=sig)
    return (sig >> np.uint64(32)).astype(np.uint32)      # the top half is monotonic: min, then shift


def minhash_signatures(texts: list[str], n: int, a: np.ndarray, b: np.ndarray, max_windows: int = 8192) -> np.ndarray:
    """(len(texts), num_perm) uint32 signatures, vectorized across documents:
    the n-grams of the whole batch are hashed in one pass, laid end to end,
    and taken in blocks of ``max_windows``; each block is one (perms, windows)
    array reduced per document with ``np.minimum.reduceat`` along its rows
    (the contiguous axis: 6x faster than reducing across rows), and documents
    cut by a block edge combine their pieces at the end.  Equal, row by row,
    to ``minhash_signature(shingle_hashes(text, n), a, b)`` (the min over a
    multiset is the min over the set)."""
    cp, lengths = _shingle_codepoints(texts, n)
    if not len(lengths):
        return np.empty((0, len(a)), dtype=np.uint32)
    h = _mix32(ngram_hashes(cp, n))                       # every window of the concatenation
    windows = lengths - n + 1                             # >= 1: short texts are padded
    first = np.cumsum(windows) - windows                  # each document's first window in x
    total = int(windows.sum())
    x = h[np.arange(total, dtype=np.int64) + np.repeat(np.cumsum(lengths) - lengths - first, windows)]
    buf = np.empty((len(a), min(max_windows, total)), dtype=np.uint64)
    pieces, owners = [], []
    for s in range(0, total, max_windows):
        e = min(s + max_windows, total)
        lo, hi = np.searchsorted(first, [s, e])           # documents starting inside [s, e)
        cuts = first[lo:hi] - s
        if not cuts.size or cuts[0] != 0:                 # the block opens inside document lo - 1
            cuts, lo = np.concatenate([[0], cuts]), lo - 1
        values = buf[:, : e - s]
        np.multiply.outer(a, x[s:e], out=values)          # (perms, windows), wrapping uint64
        values += b[:, None]
        pieces.append(np.minimum.reduceat(values, cuts, axis=1).T)
        owners.append(np.arange(lo, lo + len(cuts)))
    mins = np.concatenate(pieces)
    if len(mins) > len(lengths):                          # some document spans blocks
        mins = np.minimum.reduceat(mins, np.searchsorted(np.concatenate(owners), np.arange(len(lengths))), axis=0)
    return (mins >> np.uint64(32)).astype(np.uint32)      # the top half is monotonic: min, then shift


def _shingle_codepoints(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every text lowercased, without spaces, punctuation and "_" (what ``[\\W_]+`` removes), as
    code points laid end to end, and their lengths (a text shorter than n padded to one n-gram):
    one encode and a table lookup for the whole batch."""
    lowered = [t.lower() for t in texts]
    lengths = np.fromiter(map(len, lowered), dtype=np.int64, count=len(lowered))
    cp = codepoints("".join(lowered))
    keep = alnum_table()[cp]
    doc = np.repeat(np.arange(len(lowered)), lengths)[keep]
    cp = cp[keep]
    kept = np.bincount(doc, minlength=len(lowered))
    if kept.size and kept.min() >= n:
        return cp, kept
    sized = np.maximum(kept, n)                         # short texts padded to one n-gram
    out = np.full(int(sized.sum()), ord(_PAD), np.uint32)
    out[np.repeat(np.cumsum(sized) - sized, kept) + np.arange(cp.size) - np.repeat(np.cumsum(kept) - kept, kept)] = cp
    return out, sized


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
# LSH candidate pairs, verification and the drop rule (numpy, batch at a time).
# Inside the near-dedup path a document key (32 hex digits) is a row of two
# uint64 "words" (hi, lo), so whole partitions sort, group and join as
# arrays; the hex key comes back only for verified edges.
# --------------------------------------------------------------------------


def key_words(keys: list[str]) -> np.ndarray:
    """(n, 2) uint64 words of hex keys; row order = hex string order."""
    raw = b"".join(bytes.fromhex(k) for k in keys)
    return np.frombuffer(raw, dtype=">u8").reshape(-1, 2).astype(np.uint64)


def hex_key(hi: int, lo: int) -> str:
    return f"{hi:016x}{lo:016x}"


def partition_of(key: str, partitions: int) -> int:
    """Stable partition of a hex key (the first 8 hex digits, mod n)."""
    return int(key[:8], 16) % partitions


def word_partitions(words: np.ndarray, partitions: int) -> np.ndarray:
    """``partition_of`` for rows of key words (the top 32 bits of hi, mod n)."""
    return ((words[:, 0] >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


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


def lsh_entries(sigs: np.ndarray, words: np.ndarray, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket ids, owner key words): one entry per document and band."""
    buckets = band_hashes(sigs, bands)
    return buckets.ravel(), np.repeat(words, buckets.shape[1], axis=0)


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """0..len-1 for every length, concatenated."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def unique_rows(a: np.ndarray) -> np.ndarray:
    """Distinct rows, in lexicographic order."""
    if len(a) == 0:
        return a
    a = a[np.lexsort(a.T[::-1])]
    return a[np.r_[True, np.any(a[1:] != a[:-1], axis=1)]]


def candidate_pairs(ids: np.ndarray, words: np.ndarray, max_bucket_size: int = 100) -> np.ndarray:
    """LSH bucket entries → distinct candidate pairs as (m, 4) uint64 rows
    (words of the smaller key, words of the larger key).  A bucket yields all
    pairs of its distinct keys, or, when it holds more than
    ``max_bucket_size`` keys, a star around its smallest key."""
    empty = np.empty((0, 4), dtype=np.uint64)
    if len(ids) < 2:
        return empty
    # Most buckets hold one entry and yield nothing: one sort of the bucket ids finds the shared
    # ones, and only their entries go through the three-key sort.
    by_id = np.argsort(ids)
    same = ids[by_id[1:]] == ids[by_id[:-1]]
    inside = by_id[np.r_[same, False] | np.r_[False, same]]
    if len(inside) < 2:
        return empty
    ids, words = ids[inside], words[inside]
    order = np.lexsort((words[:, 1], words[:, 0], ids))
    ids, words = ids[order], words[order]
    repeated = (ids[1:] == ids[:-1]) & np.all(words[1:] == words[:-1], axis=1)
    keep = np.r_[True, ~repeated]
    ids, words = ids[keep], words[keep]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)])
    full = (sizes > 1) & (sizes <= max_bucket_size)
    gs, gz = starts[full], sizes[full]
    member = np.repeat(gs, gz) + _ranges(gz)
    partners = np.repeat(gz, gz) - 1 - _ranges(gz)  # later members of the same bucket
    first = np.repeat(member, partners)
    second = first + 1 + _ranges(partners)
    star = sizes > max_bucket_size
    ss, sz = starts[star], sizes[star] - 1
    first = np.r_[first, np.repeat(ss, sz)]
    second = np.r_[second, np.repeat(ss, sz) + 1 + _ranges(sz)]
    if len(first) == 0:
        return empty
    return unique_rows(np.concatenate([words[first], words[second]], axis=1))


# A signature table: the MinHash signatures of a set of documents, compact
# enough to shuffle: (key words bytes, signatures bytes, ids, chars bytes).


def sig_table(words: np.ndarray, sigs: np.ndarray, ids: list[str], chars: list[int]) -> tuple:
    return (words.tobytes(), np.ascontiguousarray(sigs, dtype=np.uint32).tobytes(), list(ids),
            np.asarray(chars, dtype=np.int64).tobytes())


class SigLookup:
    """Signature tables merged, indexed by key, for the pair joins."""

    def __init__(self, tables: Iterable[tuple]):
        tables = list(tables)
        self.words = np.concatenate([np.frombuffer(t[0], dtype=np.uint64) for t in tables] or [np.empty(0, np.uint64)]).reshape(-1, 2)
        self.sigs = np.concatenate([np.frombuffer(t[1], dtype=np.uint32) for t in tables] or [np.empty(0, np.uint32)])
        self.sigs = self.sigs.reshape(len(self.words), -1) if len(self.words) else self.sigs.reshape(0, 0)
        self.ids = [i for t in tables for i in t[2]]
        self.chars = np.concatenate([np.frombuffer(t[3], dtype=np.int64) for t in tables] or [np.empty(0, np.int64)])
        self.row = {k: r for r, k in enumerate(zip(self.words[:, 0].tolist(), self.words[:, 1].tolist()))}

    def rows(self, words: np.ndarray) -> np.ndarray:
        """Row of every key (-1 when absent)."""
        get = self.row.get
        return np.fromiter((get(k, -1) for k in zip(words[:, 0].tolist(), words[:, 1].tolist())), dtype=np.int64, count=len(words))


class Half(NamedTuple):
    """One end (0 = first key, 1 = second key) of candidate pairs, with that
    end's signatures, ids and lengths, row by row."""

    pairs: np.ndarray  # (n, 4) uint64
    end: int
    sigs: np.ndarray  # (n, num_perm) uint32
    ids: list
    chars: np.ndarray  # (n,) int64

    def pack(self, rows: np.ndarray) -> tuple:
        """The given rows, as bytes and a list (cheap to shuffle)."""
        return (self.pairs[rows].tobytes(), self.end, self.sigs[rows].tobytes(),
                [self.ids[r] for r in rows.tolist()], self.chars[rows].tobytes())

    @classmethod
    def unpack(cls, packed: tuple) -> "Half":
        pairs_b, end, sigs_b, ids, chars_b = packed
        pairs = np.frombuffer(pairs_b, dtype=np.uint64).reshape(-1, 4)
        sigs = np.frombuffer(sigs_b, dtype=np.uint32).reshape(len(pairs), -1)
        return cls(pairs, end, sigs, ids, np.frombuffer(chars_b, dtype=np.int64))

    @classmethod
    def concat(cls, halves: list["Half"], end: int) -> "Half":
        if not halves:
            return cls(np.empty((0, 4), np.uint64), end, np.empty((0, 0), np.uint32), [], np.empty(0, np.int64))
        return cls(np.concatenate([h.pairs for h in halves]), end, np.concatenate([h.sigs for h in halves]),
                   [i for h in halves for i in h.ids], np.concatenate([h.chars for h in halves]))


def attach_end(pairs: np.ndarray, end: int, lookup: SigLookup) -> Half:
    """Candidate pairs → the half at ``end`` of the distinct pairs whose key
    there is in ``lookup``.  Copies of a pair from several LSH buckets all
    ask the same partition for the same end, so they are merged here,
    before the signatures are attached."""
    pairs = unique_rows(pairs)
    rows = lookup.rows(pairs[:, 2 * end : 2 * end + 2])
    found = rows >= 0
    pairs, rows = pairs[found], rows[found]
    return Half(pairs, end, lookup.sigs[rows], [lookup.ids[r] for r in rows.tolist()], lookup.chars[rows])


def verify_halves(halves: Iterable[Half], threshold: float, keep: str) -> list[tuple]:
    """Both halves of candidate pairs → sorted edges between nodes
    ``(sort key, key, id)`` whose estimated Jaccard is >= threshold."""
    halves = list(halves)
    first = Half.concat([h for h in halves if h.end == 0], 0)
    second = Half.concat([h for h in halves if h.end == 1], 1)
    if not len(first.pairs) or not len(second.pairs):
        return []
    index = {row: j for j, row in enumerate(map(tuple, second.pairs.tolist()))}
    match = np.fromiter((index.get(row, -1) for row in map(tuple, first.pairs.tolist())), dtype=np.int64, count=len(first.pairs))
    i = np.flatnonzero(match >= 0)
    j = match[i]
    similar = np.count_nonzero(first.sigs[i] == second.sigs[j], axis=1) / first.sigs.shape[1] >= threshold
    edges = []
    for a, b in zip(i[similar].tolist(), j[similar].tolist()):
        a_hi, a_lo, b_hi, b_lo = first.pairs[a].tolist()
        ends = ((hex_key(a_hi, a_lo), first.ids[a], int(first.chars[a])), (hex_key(b_hi, b_lo), second.ids[b], int(second.chars[b])))
        edges.append(tuple((node_sort_key(doc_id, chars, key, keep), key, doc_id) for key, doc_id, chars in ends))
    return sorted(edges)


# A node is (sort_key, key, id): sort_key orders "which document to keep".


def node_sort_key(doc_id: str, chars: int, key: str, keep: str = "longest") -> tuple:
    return (-chars, doc_id, key) if keep == "longest" else (doc_id, key)


def drop_candidates(edges: Iterable[tuple]) -> list[tuple]:
    """Verified edges → ``(key, keeper sort key, keeper id, id)`` for the
    lower-ranked end of each edge (the larger sort key ranks lower)."""
    out = []
    for u, v in edges:
        keeper, dropped = (u, v) if u < v else (v, u)
        out.append((dropped[1], keeper[0], keeper[2], dropped[2]))
    return out


def best_keepers(candidates: Iterable[tuple]) -> dict[str, tuple[str, str]]:
    """Drop candidates → {dropped key: (its id, id of its highest-ranked
    near duplicate)}; independent of candidate order."""
    best: dict[str, tuple] = {}
    for key, sort_key, keeper_id, doc_id in candidates:
        if key not in best or sort_key < best[key][0]:
            best[key] = (sort_key, keeper_id, doc_id)
    return {key: (doc_id, keeper_id) for key, (_, keeper_id, doc_id) in best.items()}


def survivors(items: Iterable[tuple], candidates: Iterable[tuple]) -> tuple[list, list]:
    """Documents ``(key, id, source, line)`` and the drop candidates of their
    keys → (survivors, dropped ``(key, id, kept id)``), both sorted."""
    dropped = best_keepers(candidates)
    kept = sorted(item for item in items if item[0] not in dropped)
    return kept, sorted((key, doc_id, kept_id) for key, (doc_id, kept_id) in dropped.items())


class MinHasher:
    """A batch of keyed documents → (signatures, LSH entries, key words):
    the per-batch work shared by the Beam DoFn and the plain loop."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.a, self.b = minhash_params(cfg["num_perm"], cfg["seed"])

    def __call__(self, batch: list) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
        sigs = minhash_signatures([doc[1] for _, doc in batch], self.cfg["ngram"], self.a, self.b)
        words = key_words([key for key, _ in batch])
        return sigs, lsh_entries(sigs, words, self.cfg["bands"]), words


# --------------------------------------------------------------------------
# Beam transforms.  PCollections carry *batches* (lists) of keyed documents
# ``(key, (id, text, source, line))`` so that per-element runner overhead is
# paid per batch, not per document; shuffles go to a fixed number of hash
# partitions, each resolved in memory by one worker.  Rejects travel as
# lists of ``(reason, id, source, line, snippet, kept_id)``.
# --------------------------------------------------------------------------


def _split_by_partition(batch, partitions: int) -> Iterator[tuple[int, list]]:
    parts: dict[int, list] = {}
    for item in batch:
        parts.setdefault(partition_of(item[0], partitions), []).append(item)
    yield from parts.items()


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def keep_first(batches: Iterable[list], snippet_chars: int) -> tuple[list, list]:
    """Keyed-doc batches → (kept (key, doc) sorted by key, duplicate rejects).
    Within a key the smallest (id, source, line) is kept."""
    best: dict[str, tuple] = {}
    dups = []
    for batch in batches:
        for key, doc in batch:
            kept = best.get(key)
            if kept is None:
                best[key] = doc
            elif (doc[0], doc[2], doc[3]) < (kept[0], kept[2], kept[3]):
                dups.append((key, kept))
                best[key] = doc
            else:
                dups.append((key, doc))
    rejects = [("duplicate_exact", d[0], d[2], d[3], d[1][:snippet_chars], best[key][0]) for key, d in dups]
    return sorted(best.items()), rejects


def _exact_partition(item, snippet_chars: int, batch_size: int) -> Iterator[tuple]:
    _, sub_batches = item
    kept, rejects = keep_first(sub_batches, snippet_chars)
    if rejects:
        yield REJECTS, rejects
    for chunk in _chunks(kept, batch_size):
        yield DOCS, chunk


class ExactDedup(beam.PTransform):
    """Keyed-doc batches → events: kept batches (one document per
    normalized-text hash) and rejects (``duplicate_exact``, naming the kept id)."""

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
            | "KeepFirst" >> beam.FlatMap(_exact_partition, self.snippet_chars, self.batch_size)
        )


def _by_partition(parts: np.ndarray, partitions: int) -> Iterator[tuple[int, np.ndarray]]:
    """(partition, row indices) for every non-empty partition."""
    order = np.argsort(parts, kind="stable")
    bounds = np.searchsorted(parts[order], np.arange(partitions + 1))
    for p in range(partitions):
        if bounds[p] < bounds[p + 1]:
            yield p, order[bounds[p] : bounds[p + 1]]


BANDS, SIGS = "bands", "sigs"


class _MinHashFn(beam.DoFn):
    """Keyed-doc batch → MinHash events, emitted compactly per partition:

    * ``bands``: (partition, (bucket ids bytes, key words bytes)), by bucket id;
    * ``sigs``: (partition, signature table), by document key.
    """

    def __init__(self, cfg: dict, partitions: int):
        self.cfg = cfg
        self.partitions = partitions

    def setup(self):
        self.minhash = MinHasher(self.cfg)
        self.progress = Progress("near-duplicate MinHash")

    def teardown(self):
        self.progress.close()

    def process(self, batch) -> Iterator[tuple]:
        self.progress.update(len(batch), chars=sum(len(doc[1]) for _, doc in batch))
        sigs, (ids, owners), words = self.minhash(batch)
        parts = (ids % np.uint64(self.partitions)).astype(np.int64)
        for p, rows in _by_partition(parts, self.partitions):
            yield BANDS, (p, (ids[rows].tobytes(), owners[rows].tobytes()))
        for p, rows in _by_partition(word_partitions(words, self.partitions), self.partitions):
            table = sig_table(words[rows], sigs[rows], [batch[r][1][0] for r in rows.tolist()],
                              [len(batch[r][1][1]) for r in rows.tolist()])
            yield SIGS, (p, table)


def _bucket_partition(item, max_bucket_size: int, partitions: int) -> Iterator[tuple]:
    """One partition of LSH entries → candidate pairs, sent as signature
    requests to the partitions of both their keys: (partition, (end, pairs))."""
    _, blobs = item
    blobs = list(blobs)
    ids = np.concatenate([np.frombuffer(b[0], dtype=np.uint64) for b in blobs])
    words = np.concatenate([np.frombuffer(b[1], dtype=np.uint64) for b in blobs]).reshape(-1, 2)
    pairs = candidate_pairs(ids, words, max_bucket_size)
    for end in (0, 1):
        for p, rows in _by_partition(word_partitions(pairs[:, 2 * end : 2 * end + 2], partitions), partitions):
            yield (p, (end, pairs[rows].tobytes()))


def _attach_partition(item, partitions: int) -> Iterator[tuple]:
    """One key partition: signatures + requests → halves, routed by the
    partition of the pair's first key."""
    _, grouped = item
    requests = list(grouped["request"])
    if not requests:
        return
    lookup = SigLookup(grouped["sig"])
    for end in (0, 1):
        blobs = [blob for e, blob in requests if e == end]
        if blobs:
            half = attach_end(np.frombuffer(b"".join(blobs), dtype=np.uint64).reshape(-1, 4), end, lookup)
            for p, rows in _by_partition(word_partitions(half.pairs[:, :2], partitions), partitions):
                yield (p, half.pack(rows))


def _verify_partition(item, threshold: float, keep: str, partitions: int) -> Iterator[tuple]:
    """One pair partition: both halves of its pairs → verified edges → drop
    candidates, routed to the partition of the dropped key."""
    _, packed = item
    candidates = drop_candidates(verify_halves(map(Half.unpack, packed), threshold, keep))
    yield from _split_by_partition(candidates, partitions)


class NearDuplicates(beam.PTransform):
    """Keyed-doc batches → drop candidates ``(partition, [(key, keeper sort
    key, keeper id, id)])``, by partition of the dropped key; ``Survivors``
    joins them with the documents.

    MinHash → GroupByKey on (partitions of) the LSH bucket ids → candidate
    pairs, sent as requests to the partitions of both their keys →
    CoGroupByKey with the signatures (each signature crosses once; a pair
    found in several buckets is merged before its signatures are attached) →
    GroupByKey of the two halves of every pair → verified edges → the
    lower-ranked end of each edge.  Elements are whole partitions' or
    batches' arrays, as bytes: the runner's cost here is per byte moved."""

    def __init__(self, cfg: dict, partitions: int = 16):
        super().__init__()
        self.cfg = cfg
        self.partitions = partitions

    def expand(self, batches):
        cfg, parts = self.cfg, self.partitions
        hashed = batches | "MinHash" >> beam.ParDo(_MinHashFn(cfg, parts))
        requests = (
            hashed
            | "Bands" >> Select(BANDS)
            | "GroupBucketPartitions" >> beam.GroupByKey()
            | "CandidatePairs" >> beam.FlatMap(_bucket_partition, cfg.get("max_bucket_size", 100), parts)
        )
        return (
            {"sig": hashed | "Signatures" >> Select(SIGS), "request": requests}
            | "JoinSignatures" >> beam.CoGroupByKey()
            | "AttachSignatures" >> beam.FlatMap(_attach_partition, parts)
            | "GroupPairHalves" >> beam.GroupByKey()
            | "VerifyJaccard" >> beam.FlatMap(_verify_partition, cfg["threshold"], cfg.get("keep", "longest"), parts)
        )


SURVIVORS, DROPPED = "survivors", "dropped"


def _doc_items(batch, partitions: int) -> Iterator[tuple[int, list]]:
    """Keyed-doc batch → (partition, [(key, id, source, line)]): what the
    join, the split plan and the id census need, without texts."""
    return _split_by_partition([(key, doc[0], doc[2], doc[3]) for key, doc in batch], partitions)


def _survivors_partition(item) -> Iterator[tuple]:
    _, grouped = item
    items = [i for part in grouped["items"] for i in part]
    kept, dropped = survivors(items, (c for part in grouped["candidates"] for c in part))
    if kept:
        yield SURVIVORS, kept
    if dropped:
        yield DROPPED, dropped


class Survivors(beam.PTransform):
    """{"docs": keyed-doc batches, "candidates": drop candidates by
    partition} → events: ``survivors`` lists of ``(key, id, source, line)``
    and ``dropped`` lists of ``(key, id, kept id)``, one of each per key
    partition (a CoGroupByKey of small items: keys and ids, no texts)."""

    def __init__(self, partitions: int = 16):
        super().__init__()
        self.partitions = partitions

    def expand(self, inputs):
        items = inputs["docs"] | "DocItems" >> beam.FlatMap(_doc_items, self.partitions)
        return (
            {"items": items, "candidates": inputs["candidates"]}
            | "JoinCandidates" >> beam.CoGroupByKey()
            | "DropRule" >> beam.FlatMap(_survivors_partition)
        )
