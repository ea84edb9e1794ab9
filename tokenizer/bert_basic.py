"""BERT's basic character classes and the cut it makes before WordPiece.

Google's tokenization.py, transformers' BasicTokenizer and bert4keras' Tokenizer share
these definitions; the released vocabularies (BERT-Chinese, WoBERT, T5 PEGASUS) were
tokenized with them.  tests/test_tokenizer_released.py checks every code point against
transformers' own functions.
"""

from __future__ import annotations

import functools
import unicodedata

# CJK Unified Ideographs, Extensions A-E, both compatibility blocks: BERT's "Chinese character".
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def is_punctuation(ch: str) -> bool:
    """Every non-alphanumeric printable ASCII character, and Unicode category P*."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_space(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_removed(ch: str) -> bool:
    """bert4keras: dropped without separating its neighbours: NUL, U+FFFD and Cc/Cf controls
    (not spaces).  BERT's own BasicTokenizer also drops private-use and unassigned characters
    (every C* category); the BERT-Chinese recipe gets that from Rust's BertNormalizer."""
    return ch in "\x00\ufffd" or (not is_space(ch) and unicodedata.category(ch) in ("Cc", "Cf"))


@functools.lru_cache(maxsize=1 << 16)
def basic_spans(word: str) -> tuple[tuple[int, int, bool], ...]:
    """The pieces BERT's basic step cuts ``word`` into: (start, end, holds_removed) spans.

    Punctuation and CJK characters stand alone, whitespace separates, removed characters
    vanish without separating (a span then holds some: ``holds_removed``, and the caller
    filters them out).  Cached: the jieba recipes call it once per distinct
    out-of-vocabulary word.
    """
    spans: list[tuple[int, int, bool]] = []
    start, last, dirty = -1, -1, False  # current run of ordinary characters: first, last kept, holds removed
    for i, ch in enumerate(word):
        if is_removed(ch):
            dirty = dirty or start >= 0
            continue
        alone = is_punctuation(ch) or is_cjk(ch)
        if alone or is_space(ch) or ch.isspace():  # str.split() also cuts at U+2028/U+2029
            if start >= 0:
                spans.append((start, last + 1, dirty))
                start, dirty = -1, False
            if alone:
                spans.append((i, i + 1, False))
        else:
            if start < 0:
                start = i
            last = i
    if start >= 0:
        spans.append((start, last + 1, dirty))
    return tuple((s, e, d and any(is_removed(ch) for ch in word[s:e])) for s, e, d in spans)
