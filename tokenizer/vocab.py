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

import math
import string
from collections import Counter
from dataclasses import dataclass, field

from pipeline.clean import CJK_PUNCTUATION

from .normalize import SPACE_MARK, is_alnum_run, is_cjk_run

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
BERT_SPECIALS = [PAD, UNK, CLS, SEP, MASK]
SENTINELS = [f"<extra_id_{i}>" for i in range(100)]
SPECIALS = BERT_SPECIALS + SENTINELS  # ids 0..104, fixed
ASCII_PIECE_PENALTY = 1000.0
ASCII_SUBWORD_SHARE = 0.02  # of vocab_size, for pieces inside ASCII runs


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
) -> Vocab:
    """Pick tokens in id order and give each its Unigram score.

    ``cjk_score(token)`` defaults to jieba's default-dictionary log-probability.
    """
    if cjk_score is None:
        from .jieba_util import jieba_instance

        dt = jieba_instance()
        cjk_score = jieba_scorer(dt.FREQ, dt.total)
    if vocab_size <= len(SPECIALS) + 1:
        raise ValueError(f"vocab_size must exceed {len(SPECIALS) + 1}")

    tokens: list[str] = list(SPECIALS)
    seen = set(tokens)
    kinds = Counter(special=len(SPECIALS))

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
    # The Chinese punctuation the normalizer keeps (，。！？…), seen or not, so
    # clean text never hits [UNK] on it and generation can produce it.
    for ch in CJK_PUNCTUATION:
        add(ch, "char")
    for ch, _ in _ranked(counts.chars, min_char_freq):
        add(ch, "char")
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
    for t in tokens:
        if t in SPECIALS:
            scores.append(0.0)
        elif is_cjk_run(t):
            scores.append(cjk_score(t))
        elif t == SPACE_MARK or is_alnum_run(t):
            c = counts.ascii.get(t, 0) + counts.chars.get(t, 0) + sub.get(t, 0) + 1
            scores.append(-ASCII_PIECE_PENALTY + math.log(c / ascii_total))
        else:
            scores.append(math.log((counts.chars.get(t, 0) + 1) / (counts.characters + len(tokens))))
    return Vocab(tokens=tokens, scores=scores, kinds=dict(kinds))
