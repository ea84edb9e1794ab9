"""Token shards: pre-tokenized records in one flat, memory-mapped file per corpus shard.

Why this layout (measured with ``bench/data_bench.py --formats``): a sample is a slice of
one flat token array found through an int64 offsets index, Megatron's ``.bin``/``.idx``
design, so reading a packed row of any width is one slice of a memory map: no decoding,
no Python object per token, and the row width is chosen at train time (the shards do not
depend on ``train.max_source_len``). Arrow (``datasets``) and MDS store one row per
record, so packed rows would be fixed when the shards are written, and their per-row
read paths are several times slower. Index and tokens share one file here (a header, then
64-byte aligned arrays), so the manifest's size and sha256 of that file cover both.

File: ``ZHTOKENS`` | header length (uint64 LE) | header JSON | arrays. The header names
each array's offset, dtype and length:

* ``tokens``   every token id of the shard (uint16 when the vocabulary has at most 65,536
  entries, else uint32);
* ``segments`` int64 offsets into ``tokens``: one segment per document (``docs``), two per
  record (source, target: ``pairs``) or one per sentence (``sentences``);
* ``records``  int64 offsets into ``segments``, one entry per record, plus the end;
* ``starts``   (optional) uint8 per token: 1 where a jieba word starts (whole-word masking);
* ``flags``    (optional) uint8 per record: 1 for a labeled pair record (``sentences``).

Record kinds (``ObjectiveSpec.tokens``) and their samples:

* ``docs``: documents each followed by [SEP], concatenated; sample k is the window
  ``tokens[k*w:(k+1)*w]`` for the objective's window ``w`` (packed full rows, the last one
  of a shard shorter);
* ``pairs``: sample k is record k's (source, target) ids;
* ``sentences``: sample k is record k's sentence ids (and whether it is a labeled pair).

Reading keeps resident memory flat: the pages a reader touched are released from the
mapping (``madvise(MADV_DONTNEED)``) after every ``RELEASE_BYTES`` read; they stay in
the page cache, shared by every process on the node.
"""
from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

MAGIC = b"ZHTOKENS"
FORMAT = "zh-tokens/1"
KINDS = ("docs", "pairs", "sentences")
EXT = "tok"
ALIGN = 64
RELEASE_BYTES = 16 << 20


class TokenShardError(RuntimeError):
    """A token shard that cannot be read (one line naming the file)."""


class Encoded(NamedTuple):
    """One record as token arrays: its segments, optional per-token word starts, a flag."""
    segments: list
    starts: list | None = None
    flag: int = 0


def dtype_for(vocab_size: int) -> np.dtype:
    """The compact id dtype: uint16 while every id fits (vocabulary <= 65,536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def shard_bytes(kind: str, records: list[Encoded], dtype: np.dtype) -> bytes:
    """The file content of a token shard holding ``records`` of one kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown token record kind {kind!r} (valid: {'|'.join(KINDS)})")
    segments = [s for r in records for s in r.segments]
    seg_len = np.fromiter((len(s) for s in segments), dtype=np.int64, count=len(segments))
    arrays = {
        "tokens": np.concatenate([np.zeros(0, dtype)] + [np.asarray(s, dtype=dtype) for s in segments]),
        "segments": np.concatenate([[0], np.cumsum(seg_len)]).astype(np.int64),
        "records": np.concatenate([[0], np.cumsum([len(r.segments) for r in records])]).astype(np.int64),
    }
    if records and records[0].starts is not None:
        arrays["starts"] = np.concatenate([np.zeros(0, np.uint8)] + [np.asarray(s, np.uint8) for r in records
                                                                       for s in r.starts])
    if any(r.flag for r in records):
        arrays["flags"] = np.fromiter((r.flag for r in records), dtype=np.uint8, count=len(records))
    header = {"format": FORMAT, "kind": kind, "records": len(records), "tokens": int(seg_len.sum()), "arrays": {}}
    # Offsets depend on the header's length, which depends on the offsets' digits: fix the header size first.
    layout, pos, end = {}, 0, 0
    for name, a in arrays.items():
        layout[name] = [pos, a.dtype.str, int(a.size)]
        end = pos + a.nbytes                                     # the file ends with the last array
        pos = _aligned(end)
    header["arrays"] = layout
    head = json.dumps(header, sort_keys=True).encode()
    base = _aligned(len(MAGIC) + 8 + len(head) + 64)           # room for the offsets shifted by `base`
    for name in layout:
        layout[name][0] += base
    head = json.dumps(header, sort_keys=True).encode()
    assert len(MAGIC) + 8 + len(head) <= base, "token shard header outgrew its room"
    out = bytearray(base + end)
    out[:len(MAGIC) + 8 + len(head)] = MAGIC + struct.pack("<Q", len(head)) + head
    for name, a in arrays.items():
        start = layout[name][0]
        out[start:start + a.nbytes] = a.tobytes()
    return bytes(out)


class TokenShard:
    """A token shard opened read-only as a memory map (local or mounted filesystems)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if "://" in self.path:
            raise TokenShardError(f"{self.path}: token shards are memory-mapped and must be on a mounted "
                                  f"filesystem (copy them to local or network disk)")
        try:
            with open(self.path, "rb") as fh:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise TokenShardError(f"{self.path}: unreadable token shard ({exc})") from None
        try:
            if self._map[:len(MAGIC)] != MAGIC:
                raise ValueError("not a token shard")
            (n,) = struct.unpack("<Q", self._map[len(MAGIC):len(MAGIC) + 8])
            header = json.loads(self._map[len(MAGIC) + 8:len(MAGIC) + 8 + n])
            if header.get("format") != FORMAT:
                raise ValueError(f"format {header.get('format')!r}, expected {FORMAT}")
            self.kind, self.num_records = header["kind"], header["records"]
            self.arrays = {}
            for name, (offset, dtype, size) in header["arrays"].items():
                if offset + size * np.dtype(dtype).itemsize > len(self._map):
                    raise ValueError(f"array {name} runs past the end of the file")
                self.arrays[name] = np.frombuffer(self._map, dtype=dtype, count=size, offset=offset)
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise TokenShardError(f"{self.path}: damaged token shard ({exc})") from None
        self.tokens = self.arrays["tokens"]
        self.segments, self.records = self.arrays["segments"], self.arrays["records"]
        self.starts, self.flags = self.arrays.get("starts"), self.arrays.get("flags")
        self._read = 0

    def __getstate__(self):          # DataLoader workers reopen the file instead of pickling the map
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __len__(self) -> int:
        return self.num_records

    def num_samples(self, window: int) -> int:
        """Samples of this shard: packed windows of ``window`` tokens (docs), else records."""
        if self.kind == "docs":
            return -(-len(self.tokens) // window)
        return self.num_records

    def first_segment_lengths(self) -> np.ndarray | None:
        """Tokens of each record's first segment (a pair's source, a record's first sentence), from
        the offsets alone; None for ``docs`` (its samples are windows of one length)."""
        if self.kind == "docs":
            return None
        first = np.asarray(self.records[:-1], dtype=np.int64)
        return np.asarray(self.segments[first + 1], dtype=np.int64) - np.asarray(self.segments[first], dtype=np.int64)

    def _copy(self, array: np.ndarray, start: int, end: int) -> np.ndarray:
        out = np.array(array[start:end])
        self._read += out.nbytes
        if self._read >= RELEASE_BYTES:      # drop touched pages from this process (they stay cached)
            self._map.madvise(mmap.MADV_DONTNEED)
            self._read = 0
        return out

    def segment(self, j: int) -> np.ndarray:
        return self._copy(self.tokens, int(self.segments[j]), int(self.segments[j + 1]))

    def sample(self, k: int, window: int = 0) -> dict:
        """Sample ``k`` as numpy arrays (see the module docstring for each kind)."""
        if self.kind == "docs":
            start, end = k * window, min((k + 1) * window, len(self.tokens))
            out = {"ids": self._copy(self.tokens, start, end)}
            if self.starts is not None:
                out["starts"] = self._copy(self.starts, start, end)
            return out
        first, last = int(self.records[k]), int(self.records[k + 1])
        if self.kind == "pairs":
            return {"source_ids": self.segment(first), "target_ids": self.segment(first + 1)}
        return {"sentence_ids": Segments(self, first, last),
                "labeled": bool(self.flags[k]) if self.flags is not None else False}

    def document(self, k: int) -> list[list[int]]:
        """Record ``k``'s segments as id lists (for checks and decoding)."""
        return [self.segment(j).tolist() for j in range(int(self.records[k]), int(self.records[k + 1]))]


class Segments(Sequence):
    """A record's segments, each copied out of the map only when used (a pair uses two of a
    document's sentences)."""

    def __init__(self, shard: TokenShard, first: int, last: int):
        self.shard, self.first, self.last = shard, first, last

    def __len__(self) -> int:
        return self.last - self.first

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.shard.segment(self.first + i % len(self))


# ---------------------------------------------------------------- encoding text
class TextEncoder:
    """The tokenizer folder's ids (no special tokens added) for a batch of texts: its tokenizer.json, or
    for a folder without one (a released jieba recipe, ``spiece.model`` or ``vocab.txt`` only) the
    backend of ``load_any_tokenizer``, which the on-the-fly path uses too.

    The bulk encoder (``tokenizer.bulk``, SentencePiece's Viterbi over our vocabulary) where it
    applies, i.e. a ``make tokenizer`` jieba-Unigram folder; else ``tokenizers`` itself (other
    tokenizer folders). Whole-word starts need character offsets, which only ``tokenizers``
    gives: ``words`` uses it, with the same jieba cut as the on-the-fly whole-word collator.
    """

    def __init__(self, tokenizer_dir: str | Path, threads: int = 1, bulk: bool = True):
        from tokenizers import Tokenizer

        if (Path(tokenizer_dir) / "tokenizer.json").is_file():
            self.fast = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
        else:   # a released jieba recipe, spiece.model or vocab.txt only: the loaded tokenizer's own backend
            from tokenizer.loading import load_any_tokenizer
            self.fast = load_any_tokenizer(tokenizer_dir).backend_tokenizer
        self.bulk = None
        if bulk:
            try:
                from tokenizer.bulk import BulkEncoder
                self.bulk = BulkEncoder(tokenizer_dir, num_threads=threads)
            except (ValueError, OSError, KeyError):
                self.bulk = None        # not a jieba-Unigram folder: tokenizers is the exact engine
        self.engine = "bulk" if self.bulk else "tokenizers"

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self.bulk is not None:
            return self.bulk.encode_batch(texts)
        return [e.ids for e in self.fast.encode_batch_fast(texts, add_special_tokens=False)]

    def words(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        """(ids, word starts) per text: start = 1 on a token that begins a new jieba word."""
        from pretrain.objectives.mlm_proposal import word_index

        out = []
        for text, enc in zip(texts, self.fast.encode_batch(texts, add_special_tokens=False)):
            words = word_index(text, enc.offsets)
            out.append((enc.ids, [1 if i == 0 or w != words[i - 1] else 0 for i, w in enumerate(words)]))
        return out
