"""Decontamination: drop (or flag) training documents that share a long n-gram with an eval set.

Whitespace-split n-grams (lm-eval's) mean nothing in Chinese, so the unit is the character:
both sides are normalized (traditional -> simplified, NFKC, lowercase, every space and
punctuation mark removed, a Latin word or number counted as one character) and a document is contaminated by an evaluation set when
one of its ``ngram``-character windows (13 by default, GPT-3's size) occurs in one of the set's
items. Items shorter than ``ngram`` (many LCQMC/BQ questions) are matched whole when they have
at least ``MIN_ITEM_CHARS`` characters. The index is a sorted array of 64-bit n-gram hashes
with a bitmask of the sets each came from, built once per worker.

The project's own sets are the STS *test* files, the CSL title test set and CMRC 2018 dev under
``$ZH_SHARED_DATA`` (their absence is noted in stats.json, not an error); sets the user names in
``decontam.eval_sets`` must exist.
"""

from __future__ import annotations

import glob
import json
import os
import re
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from pipeline.clean import to_simplified
from pipeline.config import DecontamConfig, EvalSet, _project_eval_sets, section
from pipeline.typed_config import ConfigError

MIN_ITEM_CHARS = 8
FILTER_BITS = 25            # 32 MB membership prefilter per worker: few binary searches left
_STRIP = re.compile(r"[\W_]+")
_WORD = re.compile(r"[a-z0-9]+")
_RUN = re.compile(r"(.)\1{2,}")
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def _word_char(m: "re.Match[str]") -> str:
    """A Latin word or a number as ONE character (a plane-15 code point from its CRC)."""
    return chr(0xF0000 + zlib.crc32(m.group().encode()) % 0xFFFE)


def normalize(text: str) -> str:
    """NFKC, lowercase, no spaces or punctuation; each Latin word or number becomes one
    character and runs of one character collapse, so that 13 "characters" are 13 Chinese
    characters or words ("international" alone, or "1111111", is not a 13-gram)."""
    text = _STRIP.sub("", unicodedata.normalize("NFKC", text).lower())
    return _RUN.sub(r"\1", _WORD.sub(_word_char, text))


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


_BASE = 0x9E3779B97F4A7C15
_POW: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]   # B^k, B^-k (mod 2^64)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    if _POW[0].size < n:
        k = np.arange(max(n, 2 * _POW[0].size), dtype=object)
        inv = pow(_BASE, -1, 1 << 64)
        _POW[0] = np.array([pow(_BASE, int(i), 1 << 64) for i in k], dtype=np.uint64)
        _POW[1] = np.array([pow(inv, int(i), 1 << 64) for i in k], dtype=np.uint64)
    return _POW[0], _POW[1]


def window_hashes(cp: np.ndarray, n: int, prefix: Optional[np.ndarray] = None) -> np.ndarray:
    """Polynomial hashes of every n-character window in O(1) numpy operations (rolling hash
    from one prefix sum, shared by all window lengths); uint64 arithmetic wraps."""
    m = len(cp) - n + 1
    if m <= 0:
        return np.zeros(0, np.uint64)
    if prefix is None:
        prefix = _prefix(cp)
    fwd, _ = _powers(len(cp) + 1)
    return (prefix[n:] - prefix[:m]) * fwd[n - 1:n - 1 + m]


def _prefix(cp: np.ndarray) -> np.ndarray:
    _, inv = _powers(len(cp) + 1)
    out = np.zeros(len(cp) + 1, np.uint64)
    np.cumsum((cp.astype(np.uint64) + np.uint64(1)) * inv[:len(cp)], out=out[1:])
    return out


def expand_path(path: str) -> str:
    """``$ZH_SHARED_DATA`` (default: the shared data folder beside the repository) and ``~``."""
    env = {"ZH_SHARED_DATA": os.environ.get("ZH_SHARED_DATA", str(DEFAULT_ROOT))}
    return os.path.expanduser(re.sub(r"\$\{?ZH_SHARED_DATA\}?", lambda _: env["ZH_SHARED_DATA"], path))


def read_eval_items(spec: EvalSet) -> Iterator[str]:
    """The texts of one eval set (every matching file)."""
    for path in sorted(glob.glob(expand_path(spec.path))):
        with open(path, encoding="utf-8-sig") as f:
            if spec.format == "squad":
                for article in json.load(f)["data"]:
                    for para in article["paragraphs"]:
                        yield para["context"]
                        for qa in para.get("qas", []):
                            yield qa["question"]
            elif spec.format == "tsv":
                for line in f:
                    cols = line.rstrip("\n").split("\t")
                    yield from (cols[i] for i in spec.columns if i < len(cols))
            else:
                yield from (line.rstrip("\n") for line in f)


class _HashSet:
    """Sorted uint64 hashes with a payload each, and a bitmap prefilter for fast misses."""

    def __init__(self, hashes: np.ndarray, payload: np.ndarray):
        order = np.argsort(hashes, kind="stable")
        hashes, payload = hashes[order], payload[order]
        self.hashes, start = np.unique(hashes, return_index=True)
        self.payload = np.bitwise_or.reduceat(payload, start) if hashes.size else payload
        self.bitmap = np.zeros(1 << FILTER_BITS, dtype=bool)
        self.bitmap[self._slot(self.hashes)] = True

    @staticmethod
    def _slot(h: np.ndarray) -> np.ndarray:
        return (h >> np.uint64(64 - FILTER_BITS)).astype(np.int64)   # high bits: the best mixed

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``h`` that are members, their payloads)."""
        if not self.hashes.size:
            return np.zeros(0, np.int64), self.payload[:0]
        maybe = np.flatnonzero(self.bitmap[self._slot(h)])
        if maybe.size == 0:
            return maybe, self.payload[:0]
        pos = np.searchsorted(self.hashes, h[maybe])
        pos[pos == self.hashes.size] = 0
        hit = self.hashes[pos] == h[maybe]
        return maybe[hit], self.payload[pos[hit]]


@dataclass
class EvalIndex:
    """n-gram hashes of the long items (payload: bitmask of sets); short items keyed by the
    hash of their first MIN_ITEM_CHARS characters, verified whole on a prefix hit."""
    names: list[str]
    ngrams: _HashSet
    prefixes: _HashSet          # payload: group number in ``short``
    short: list                 # per prefix: [(length, full hash, set mask)]
    items: dict                 # set name -> number of items indexed
    missing: list               # project sets whose files are absent

    def sets_in(self, text: str, n: int) -> list[str]:
        """Names of the eval sets sharing an n-gram (or a whole short item) with ``text``."""
        cp = _codepoints(normalize(to_simplified(text)))
        if len(cp) < MIN_ITEM_CHARS:
            return []
        prefix = _prefix(cp)
        found = 0
        if len(cp) >= n:
            _, masks = self.ngrams.lookup(window_hashes(cp, n, prefix))
            if masks.size:
                found |= int(np.bitwise_or.reduce(masks))
        if self.short:
            for at, group in zip(*self.prefixes.lookup(window_hashes(cp, MIN_ITEM_CHARS, prefix))):
                for length, full, mask in self.short[int(group)]:
                    if at + length <= len(cp) and window_hashes(cp[at:at + length], length)[0] == full:
                        found |= mask
        return [name for i, name in enumerate(self.names) if found >> i & 1]


def build_index(cfg: "DecontamConfig | dict | None" = None) -> Optional[EvalIndex]:
    """The eval sets of a ``decontam:`` section, indexed; None when switched off."""
    c = section(DecontamConfig, cfg)
    if not c.enabled:
        return None
    sets = (_project_eval_sets() if c.project_sets else []) + list(c.eval_sets)
    if len(sets) > 63:
        raise ConfigError(f"decontam: at most 63 eval sets, got {len(sets)}")
    user = {s.name for s in c.eval_sets}
    chunks, masks, short, items, missing = [], [], {}, {}, []
    for i, spec in enumerate(sets):
        if not glob.glob(expand_path(spec.path)):
            if spec.name in user:
                raise ConfigError(f"decontam.eval_sets: '{spec.name}': no file matches {spec.path}")
            missing.append(spec.name)
            continue
        count = 0
        for text in read_eval_items(spec):
            cp = _codepoints(normalize(to_simplified(text)))
            if len(cp) >= c.ngram:
                h = window_hashes(cp, c.ngram)
                chunks.append(h)
                masks.append(np.full(h.size, 1 << i, dtype=np.uint64))
            elif len(cp) >= MIN_ITEM_CHARS:
                key = (len(cp), int(window_hashes(cp, len(cp))[0]), int(window_hashes(cp, MIN_ITEM_CHARS)[0]))
                short[key] = short.get(key, 0) | 1 << i
            else:
                continue
            count += 1
        items[spec.name] = count
    groups: dict[int, list] = {}
    for (length, full, prefix), mask in short.items():
        groups.setdefault(prefix, []).append((length, np.uint64(full), mask))
    h = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
    m = np.concatenate(masks) if masks else np.zeros(0, np.uint64)
    prefixes = _HashSet(np.array(list(groups), dtype=np.uint64), np.arange(len(groups), dtype=np.uint64))
    return EvalIndex([s.name for s in sets], _HashSet(h, m), prefixes,
                     list(groups.values()), items, missing)


class Decontaminator:
    """``decontam:`` applied to one text: (reject reason or None, contaminating set names)."""

    def __init__(self, cfg: "DecontamConfig | dict | None" = None):
        c = section(DecontamConfig, cfg)
        self.n = c.ngram
        self.action = c.action
        self.index = build_index(c)

    def __call__(self, text: str) -> tuple[Optional[str], list[str]]:
        if self.index is None:
            return None, []
        sets = self.index.sets_in(text, self.n)
        if sets and self.action == "reject":
            return f"decontam_{sets[0]}", sets
        return None, sets
