"""Rolling hashes of character spans, and a vectorized hash table to look them up.

One prefix sum over a whole batch of texts serves every span length, so the decontamination
index (13-grams, short-item prefixes) and the quality model (1- to N-grams) hash a batch in a
few numpy operations.
"""

from __future__ import annotations

import sys

import numpy as np


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


_ALNUM: list = []


def alnum_table() -> np.ndarray:
    """Code point -> ``str.isalnum()``: what survives the regex ``[\\W_]+`` removal of spaces,
    punctuation and "_" (near-dedup shingles, decontamination), as one numpy lookup over a
    whole batch; built once per process (planes 4-13 hold no assigned characters)."""
    if not _ALNUM:
        table = np.zeros(sys.maxunicode + 1, bool)
        for lo, hi in ((0, 0x40000), (0xE0000, sys.maxunicode + 1)):
            table[[cp for cp in range(lo, hi) if chr(cp).isalnum()]] = True
        _ALNUM.append(table)
    return _ALNUM[0]


_BASE = 0x9E3779B97F4A7C15
_FIB = np.uint64(0x9E3779B97F4A7C15)
_POW: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]   # B^k, B^-k (mod 2^64)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """B^k and B^-k (mod 2^64) for k < n, cached and grown by doubling."""
    if _POW[0].size < n:
        size = max(n, 2 * _POW[0].size)
        inv = pow(_BASE, -1, 1 << 64)
        for i, base in enumerate((_BASE, inv)):
            arr = np.empty(size, np.uint64)
            arr[0] = 1
            arr[1:] = base
            _POW[i] = np.cumprod(arr, dtype=np.uint64)     # wraps mod 2^64
    return _POW[0], _POW[1]


def prefix_sums(cp: np.ndarray) -> np.ndarray:
    _, inv = _powers(len(cp) + 1)
    out = np.zeros(len(cp) + 1, np.uint64)
    np.cumsum((cp.astype(np.uint64) + np.uint64(1)) * inv[:len(cp)], out=out[1:])
    return out


class HashTable:
    """uint64 keys -> values, open addressing with linear probing, looked up for a whole array
    of hashes at once (a few gathers per probe round instead of a binary search's ~20 dependent
    steps). Key 0 marks an empty slot; a real key 0 is stored as 1 (a 2^-64 collision)."""

    def __init__(self, keys: np.ndarray, vals: np.ndarray, empty_val=0):
        keys = np.where(keys == 0, np.uint64(1), keys).astype(np.uint64)
        self.bits = max(4, int(np.ceil(np.log2(max(1, keys.size) * 2 + 1))))
        size = 1 << self.bits
        self.mask = size - 1
        self.keys = np.zeros(size, np.uint64)
        self.vals = np.full(size, empty_val, dtype=vals.dtype)
        # Linear probing laid out in one pass: taken in order of home slot, each key goes to its
        # home or just after the key before it, whichever is later (a running max); keys pushed
        # past the end wrap to the front as if their home were there, and the pass repeats.
        home = self._slot(keys)
        order = np.argsort(home, kind="stable")
        home = home[order]
        rank = np.arange(keys.size)
        while True:
            pos = np.maximum.accumulate(home - rank) + rank if keys.size else rank
            over = pos >= size
            if not over.any():
                break
            home = np.where(over, pos - size, home)
            again = np.argsort(home, kind="stable")
            order, home = order[again], home[again]
        self.keys[pos] = keys[order]
        self.vals[pos] = vals[order]

    def _slot(self, h: np.ndarray) -> np.ndarray:
        """Fibonacci hashing: short n-grams hash to small numbers, the multiply spreads them."""
        return ((h * _FIB) >> np.uint64(64 - self.bits)).astype(np.int64)

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, values; ``empty_val`` where not found) for an array of hashes. Each
        call costs a few numpy operations per probe round: look up whole batches at once.
        The first round runs on the whole array without index arrays; most lookups end there."""
        found, slot = self._find(h)
        return found, self.vals[slot]

    def hits(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``h`` that are keys, their values): ``lookup`` without gathering a
        value for every miss, for sets that most hashes miss."""
        found, slot = self._find(h)
        at = np.flatnonzero(found)
        return at, self.vals[slot[at]]

    def _find(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, slot of each hash: its key's, or the empty slot that ended its probe)."""
        if not h.all():
            h = np.where(h == 0, np.uint64(1), h)
        slot = self._slot(h)
        k = self.keys[slot]
        found = k == h
        pending = np.flatnonzero((k != 0) ^ found)     # occupied by another key: probe on
        while pending.size:
            slot[pending] = (slot[pending] + 1) & self.mask
            k = self.keys[slot[pending]]
            hit = k == h[pending]
            found[pending[hit]] = True
            pending = pending[(k != 0) & ~hit]
        return found, slot


def span_hashes(prefix: np.ndarray, starts: np.ndarray, lengths) -> np.ndarray:
    """Polynomial hashes of the spans [start, start + length) of a text given its
    ``prefix_sums``: the same value for the same characters at any position, so many texts
    laid end to end are hashed with one prefix sum (uint64 arithmetic wraps)."""
    ends = starts + lengths
    fwd, _ = _powers(len(prefix))
    return (prefix[ends] - prefix[starts]) * fwd[ends - 1]
