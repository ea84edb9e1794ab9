"""Vocabulary selection: specials, characters, ASCII pieces, then frequent words.

The WoBERT / T5 PEGASUS recipe: every character of the corpus, plus the most
frequent multi-character jieba words until the size budget is used.  Each
entry also gets a Unigram score, chosen so that the Rust Viterbi reproduces
jieba's own maximum-probability segmentation:

* CJK tokens: ``log(jieba_freq or 1) - log(jieba_total)``, the exact terms of
  ``jieba.Tokenizer.calc``; corpus counts only decide *which* words get in.
* ASCII pieces (letter/digit runs, optionally with the space marker):
  ``-ASCII_PIECE_PENALTY + log p`` so the fewest pieces win (a run that is in
  the vocabulary is one token) and corpus frequency breaks ties.
* Other single characters (Chinese punctuation ，。！？ included, always in the
  vocabulary) are pre-tokens of their own; their score is moot.

Ordering is deterministic: ties are broken by ``(-count, token)``.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections import Counter
from dataclasses import dataclass, field

from pipeline.clean import CJK_PUNCTUATION

from .normalize import SPACE_MARK, is_alnum_run, is_cjk_run, normalize

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
BERT_SPECIALS = [PAD, UNK, CLS, SEP, MASK]
SENTINELS = [f"<extra_id_{i}>" for i in range(100)]
SPECIALS = BERT_SPECIALS + SENTINELS  # ids 0..104, fixed
ASCII_PIECE_PENALTY = 1000.0
ASCII_SUBWORD_SHARE = 0.02  # of vocab_size, for pieces inside ASCII runs
BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]  # byte fallback: ids 105..360 when on
BYTE_PIECE = re.compile("<0x[0-9A-F]{2}>")
# Never chosen for text that spells "<0x41>" (the letters' pieces score above it), and far
# enough from the other scores not to eat float64 precision.
BYTE_PIECE_SCORE = -1e4
# Han characters of these character sets join the vocabulary even if the corpus lacks them
# (GB2312: 6,763 simplified; Big5 level 1: 5,401 frequent traditional; 8,836 together),
# at most COVERAGE_SHARE of vocab_size, most probable first: all of them in a 50,000 vocabulary.
CHAR_COVERAGE = {"none": (), "gb2312": (("gb2312", 0xA1, 0xF7),), "gb2312+big5": (("gb2312", 0xA1, 0xF7), ("big5", 0xA4, 0xC6))}
COVERAGE_SHARE = 0.2


@functools.lru_cache(maxsize=4)
def coverage_chars(coverage: str) -> list[str]:
    """The Han characters of ``CHAR_COVERAGE[coverage]``, decoded with Python's codecs (every
    two-byte code with the given lead bytes), sorted by code point."""
    import unicodedata

    if coverage not in CHAR_COVERAGE:
        raise ValueError(f"char coverage must be one of {sorted(CHAR_COVERAGE)}, not {coverage!r}")
    chars = set()
    for codec, lead_lo, lead_hi in CHAR_COVERAGE[coverage]:
        for code in range(lead_lo << 8, (lead_hi + 1) << 8):
            try:
                ch = code.to_bytes(2, "big").decode(codec)
            except UnicodeDecodeError:
                continue
            if len(ch) == 1 and unicodedata.name(ch, "").startswith("CJK UNIFIED IDEOGRAPH"):
                chars.add(ch)
    return sorted(chars)


def coverage_tokens(char_coverage: str, vocab_size: int, have: set[str], cjk_score, lowercase: bool = True) -> list[str]:
    """The coverage characters a vocabulary adds: not in ``have``, stable under the normalizer
    (it never produces the others), most probable first (``cjk_score``), capped at
    ``COVERAGE_SHARE * vocab_size``."""
    chars = [ch for ch in coverage_chars(char_coverage) if ch not in have and normalize(ch, lowercase) == ch]
    return sorted(chars, key=lambda ch: (-cjk_score(ch), ch))[: int(COVERAGE_SHARE * vocab_size)]


@dataclass
class Counts:
    """Corpus statistics produced by the counting job (tokenizer.counting)."""

    words: Counter = field(default_factory=Counter)  # multi-char CJK jieba words
    chars: Counter = field(default_factory=Counter)  # every non-space character
    ascii: Counter = field(default_factory=Counter)  # letter/digit runs, "▁"-marked or not
    documents: int = 0
    characters: int = 0


@dataclass
class Vocab:
    tokens: list[str]
    scores: list[float]
    kinds: dict[str, int]  # composition: special/char/word/ascii


def _ranked(counter: Counter, min_count: int) -> list[tuple[str, int]]:
    return sorted(((t, c) for t, c in counter.items() if c >= min_count), key=lambda tc: (-tc[1], tc[0]))


def ascii_substrings(runs: Counter, max_len: int = 6) -> Counter:
    """Occurrences of every 2..max_len substring inside ASCII runs (marker stripped)."""
    sub: Counter = Counter()
    for run, c in runs.items():
        run = run.removeprefix(SPACE_MARK)
        for n in range(2, min(max_len, len(run) - 1) + 1):  # proper substrings only
            for i in range(len(run) - n + 1):
                sub[run[i : i + n]] += c
    return sub


def jieba_scorer(freq: dict[str, int], total: int):
    """Score function with jieba's own log-probabilities (see Tokenizer.calc)."""
    log_total = math.log(total)
    return lambda token: math.log(freq.get(token) or 1) - log_total


def select_vocab(
    counts: Counts,
    vocab_size: int = 50000,
    min_char_freq: int = 1,
    min_word_freq: int = 2,
    max_word_len: int = 10,
    cjk_score=None,
    lowercase: bool = True,
    char_coverage: str = "gb2312+big5",
    byte_fallback: bool = True,
) -> Vocab:
    """Pick tokens in id order and give each its Unigram score.

    ``cjk_score(token)`` defaults to jieba's default-dictionary log-probability.
    ``byte_fallback``: the 256 byte pieces right after the specials, so a character outside
    the vocabulary becomes its UTF-8 bytes instead of [UNK].  ``char_coverage``: the Han
    characters of a character set (``CHAR_COVERAGE``, see ``coverage_tokens``) follow the
    corpus characters.
    """
    if cjk_score is None:
        from .jieba_util import jieba_instance

        dt = jieba_instance()
        cjk_score = jieba_scorer(dt.FREQ, dt.total)
    reserved = len(SPECIALS) + (len(BYTE_PIECES) if byte_fallback else 0)
    if vocab_size <= reserved + 1:
        raise ValueError(f"vocab_size must exceed {reserved + 1}")

    tokens: list[str] = list(SPECIALS) + (BYTE_PIECES if byte_fallback else [])
    seen = set(tokens)
    kinds = Counter(special=len(SPECIALS), **({"byte": len(BYTE_PIECES)} if byte_fallback else {}))

    def add(token: str, kind: str) -> bool:
        if token in seen or len(tokens) >= vocab_size:
            return False
        tokens.append(token)
        seen.add(token)
        kinds[kind] += 1
        return True

    # The space marker and every ASCII letter/digit, so ASCII never hits [UNK].
    add(SPACE_MARK, "ascii")
    alphabet = string.digits + string.ascii_lowercase + ("" if lowercase else string.ascii_uppercase)
    for ch in alphabet:
        add(ch, "ascii")
    # The Chinese punctuation the normalizer keeps (，。！？…) and ASCII's, seen or not, so
    # clean text never hits [UNK] on it and generation can produce it (and a typed "<0x41>"
    # is never cheaper as one byte piece than as its characters).
    for ch in CJK_PUNCTUATION + (string.punctuation if byte_fallback else ""):
        add(ch, "char")
    for ch, _ in _ranked(counts.chars, min_char_freq):
        add(ch, "char")
    for ch in coverage_tokens(char_coverage, vocab_size, seen, cjk_score, lowercase):
        add(ch, "coverage")
    # Pieces of ASCII runs (e.g. "ing", "20"), so a rare English word or number
    # is not spelled letter by letter; a small fixed share of the budget.
    sub = ascii_substrings(counts.ascii, max_len=min(6, max_word_len))
    budget = len(tokens) + int(ASCII_SUBWORD_SHARE * vocab_size)
    for w, _ in _ranked(sub, min_word_freq):
        if len(tokens) >= budget:
            break
        add(w, "ascii")
    # Multi-character entries compete on corpus frequency alone.
    candidates = Counter()
    for w, c in counts.words.items():
        # a word needs its characters in the vocab (min_char_freq > 1 can drop some),
        # otherwise the Rust unknown-character penalty would differ from jieba's
        if 2 <= len(w) <= max_word_len and is_cjk_run(w) and all(ch in seen for ch in w):
            candidates[w] = c
    for w, c in counts.ascii.items():
        if len(w.removeprefix(SPACE_MARK)) <= max_word_len and len(w) >= 2 and is_alnum_run(w):
            candidates[w] = c
    for w, _ in _ranked(candidates, min_word_freq):
        if len(tokens) >= vocab_size:
            break
        add(w, "word" if is_cjk_run(w) else "ascii")

    ascii_total = sum(counts.ascii.values()) + sum(counts.chars[c] for c in alphabet) + sum(sub.values()) + len(tokens)
    scores: list[float] = []
    bytes_ = set(BYTE_PIECES)
    for t in tokens:
        if t in SPECIALS:
            scores.append(0.0)
        elif t in bytes_:
            scores.append(BYTE_PIECE_SCORE)
        elif is_cjk_run(t):
            scores.append(cjk_score(t))
        elif t == SPACE_MARK or is_alnum_run(t):
            c = counts.ascii.get(t, 0) + counts.chars.get(t, 0) + sub.get(t, 0) + 1
            scores.append(-ASCII_PIECE_PENALTY + math.log(c / ascii_total))
        else:
            scores.append(math.log((counts.chars.get(t, 0) + 1) / (counts.characters + len(tokens))))
    return Vocab(tokens=tokens, scores=scores, kinds=dict(kinds))
