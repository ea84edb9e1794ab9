"""Exact character-level longest common subsequence (LCS) length.

``lcs_length`` is the bit-parallel algorithm of Allison & Dix (1986) in the
form given by Hyyrö (2004), using Python big ints as bit vectors: one Python
loop iteration per character of the shorter string, each doing a few big-int
operations over the longer string.  ``lcs_length_dp`` (plain dynamic
programming) and ``lcs_length_numpy`` (row-vectorised DP) are references for
tests and benchmarks.
"""

from __future__ import annotations

import numpy as np


def char_masks(text: str) -> dict[str, int]:
    """Match masks: bit ``i`` of ``masks[c]`` is set iff ``text[i] == c``."""
    positions: dict[str, list[int]] = {}
    for i, ch in enumerate(text):
        positions.setdefault(ch, []).append(i)
    masks: dict[str, int] = {}
    for ch, where in positions.items():
        bits = bytearray((len(text) + 7) // 8)
        for i in where:
            bits[i >> 3] |= 1 << (i & 7)
        masks[ch] = int.from_bytes(bits, "little")
    return masks


def lcs_with_masks(masks: dict[str, int], length: int, other: str, allowed: int = -1) -> int:
    """LCS of ``other`` against the ``length``-char text behind ``masks``.

    Text positions whose bit is clear in ``allowed`` never match, which is the
    same as deleting them from the text; this lets the greedy selector reuse
    one set of masks for the whole document instead of rebuilding them for
    every candidate "rest" string.
    """
    local = {ch: masks.get(ch, 0) & allowed for ch in set(other)}
    v = (1 << length) - 1
    for ch in other:
        u = v & local[ch]
        # Hyyrö: V' = (V + U) | (V - U); every zero bit of V is one LCS match.
        # Carries only flow upwards, so bits above ``length`` never disturb
        # the low bits and masking can wait until the end.
        v = (v + u) | (v - u)
    return length - (v & ((1 << length) - 1)).bit_count()


def lcs_length(a: str, b: str) -> int:
    """Exact LCS length of ``a`` and ``b`` in O(len(a) * len(b) / w) word operations."""
    if len(a) < len(b):
        a, b = b, a  # bit vectors over the longer string, Python loop over the shorter
    if not b:
        return 0
    return lcs_with_masks(char_masks(a), len(a), b)


def lcs_length_dp(a: str, b: str) -> int:
    """Textbook O(len(a) * len(b)) dynamic programme; the reference for tests."""
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def lcs_length_numpy(a: str, b: str) -> int:
    """Row-vectorised DP: row[j] = prefix-max of max(prev[j], prev[j-1] + match[j])."""
    if not a or not b:
        return 0
    codes_b = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    prev = np.zeros(len(b) + 1, dtype=np.int32)
    for ca in a:
        match = codes_b == ord(ca)
        cand = np.maximum(prev[1:], prev[:-1] + match)
        row = np.empty_like(prev)
        row[0] = 0
        np.maximum.accumulate(cand, out=row[1:])
        prev = row
    return int(prev[-1])
