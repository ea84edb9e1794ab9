"""jieba's HMM-off segmentation with its full dictionary, computed by a Rust Unigram.

``jieba.cut(text, HMM=False)`` cuts ``text`` into blocks of ``re_han_default``
characters (ideographs U+4E00-U+9FD5, ASCII letters/digits, ``+#&._%-``) and single
other characters ("\\r\\n" stays one).  In a block it takes the maximum-probability
path over the dictionary DAG, each word scored ``log(freq or 1) - log(total)``, and
glues runs of single ASCII letters/digits back into one word.

A ``tokenizers`` Unigram whose pieces are the dictionary words with exactly those
float64 scores runs the same Viterbi.  Three details make it bit-exact rather than
nearly so:

* jieba sums scores from the end of the block (``route[i] = score + route[j]``) and
  keeps the longest first word on a tie; the Unigram sums from the start and keeps the
  longest *last* word.  Run on the reversed text with reversed words, the Unigram adds
  the same numbers in the same order and breaks ties the same way.
* every block character is a piece (score ``-log(total)`` when jieba does not know it),
  so the Unigram never falls back to its unknown token inside a block.
* 191 characters are in the dictionary only as the start of longer words ("1" of
  "1号店", "匟" of "匟床"): where one of those words matches, jieba cannot cut the
  character alone, the Unigram could ("匟|床上叠床" instead of "匟床|上|叠床").  A block
  where that happens (rare: 357 words, mostly "1号店", "4s店", "c++", "c#") is cut by
  jieba itself, after checking that its dictionary is the one the segmenter was built from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from pathlib import Path

from tokenizers import Regex, models, pre_tokenizers

from .bert_basic import basic_spans, is_removed

DICTIONARY_FILE = "jieba_dictionary.json"
_UNK = "<unk>"  # never matches: "<" is not a block character
_CACHE_SIZE = 1 << 17
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")  # jieba's re_eng


def dictionary_sha256() -> str:
    import jieba

    return hashlib.sha256(Path(jieba.__file__).with_name("dict.txt").read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def jieba_dictionary() -> dict:
    """jieba's default (full) dictionary as data: words with a frequency, their total, the
    block character class (e.g. ``[一-鿕a-zA-Z0-9+#&\\._%\\-]``).  Frequencies, not scores:
    scores written to JSON and parsed by ``tokenizers`` come back off by one ulp now and
    then, which flips jieba's exact ties; computed at load they are jieba's own floats."""
    import jieba

    from .jieba_util import jieba_instance

    dt = jieba_instance()
    pattern = jieba.re_han_default.pattern
    assert pattern.startswith("([") and pattern.endswith("]+)"), pattern
    return {"jieba_version": jieba.__version__, "dictionary_sha256": dictionary_sha256(),
            "block_class": pattern[1:-2], "total": dt.total, "freq": {w: f for w, f in dt.FREQ.items() if f > 0}}


def export_dictionary(path: str | Path) -> dict:
    """Write jieba_dictionary() to ``path``; returns its description (no frequencies)."""
    data = jieba_dictionary()
    Path(path).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return {k: v for k, v in data.items() if k != "freq"}


def segmenter_pieces(dictionary: dict) -> list[tuple[str, float]]:
    """The Unigram's pieces: the dictionary's words reversed, every block character, with
    jieba's scores (see the module docstring); id = position."""
    freq, log_total = dictionary["freq"], math.log(dictionary["total"])
    scores = {w[::-1]: math.log(f) - log_total for w, f in freq.items()}
    in_block = re.compile(dictionary["block_class"])
    for ch in map(chr, range(0x10000)):  # jieba's class is BMP-only
        if ch not in scores and in_block.fullmatch(ch):
            scores[ch] = math.log(1) - log_total  # jieba's ``FREQ.get(ch) or 1``
    return [(_UNK, 0.0), *scores.items()]


_SEGMENTERS: dict[str, tuple] = {}  # dictionary sha256 -> (Unigram, lengths, prefix words): built once per process


def _segmenter(dictionary: dict) -> tuple:
    key = dictionary["dictionary_sha256"]
    if key not in _SEGMENTERS:
        pieces = segmenter_pieces(dictionary)
        model = models.Unigram(pieces, unk_id=0, byte_fallback=False)
        # by segmenter id: word length, -1 for a single ASCII letter/digit (jieba glues those)
        lengths = [-1 if p in _ALNUM else len(p) for p, _ in pieces]
        freq = dictionary["freq"]  # prefix-only words: their first character is no word of its own
        prefix_words = frozenset(w for w in freq if len(w) > 1 and w[0] not in freq)
        _SEGMENTERS[key] = (model, lengths, prefix_words)
    return _SEGMENTERS[key]


def block_split(block_class: str) -> pre_tokenizers.Split:
    """jieba's first cut: each block of its character class, CR LF, each other character."""
    inner = block_class[1:-1]
    return pre_tokenizers.Split(Regex(f"[{inner}]+|\r\n|[^{inner}]"), "isolated")


def _kept(ch: str) -> bool:
    return not is_removed(ch)


class JiebaPreTokenizer:
    """``tokenizers`` custom pre-tokenizer, after ``block_split``: jieba's words; a word
    outside ``vocab`` is cut the BERT way (bert4keras' ``Tokenizer(pre_tokenize=jieba.cut)``),
    so the WordPiece model that follows keeps a vocabulary word whole and splits the others."""

    def __init__(self, dictionary: dict, vocab: set[str]):
        self.dictionary = dictionary
        self.model, self.lengths, self.prefix_words = _segmenter(dictionary)  # model.tokenize: no pipeline
        self.vocab = vocab
        self.prefix_only = frozenset(w[0] for w in self.prefix_words)
        self.prefix_len = max(map(len, self.prefix_words), default=0)
        self._jieba = None  # jieba itself, loaded for the first block with a prefix-only word
        self._cache: dict[str, tuple[tuple[int, int, bool], ...]] = {}  # chunk -> pieces (punctuation, frequent phrases)

    def needs_jieba(self, block: str) -> bool:
        """Does a word that starts with a prefix-only character match in the block?"""
        if self.prefix_only.isdisjoint(block):
            return False
        words, n = self.prefix_words, len(block)
        return any(ch in self.prefix_only and any(block[k:j] in words for j in range(k + 2, min(n, k + self.prefix_len) + 1))
                   for k, ch in enumerate(block))

    def jieba_words(self, block: str) -> list[str]:
        if self._jieba is None:
            from .jieba_util import jieba_instance

            if dictionary_sha256() != self.dictionary["dictionary_sha256"]:
                raise ValueError("the installed jieba dictionary is not the one this tokenizer was built from "
                                 f"(jieba {self.dictionary['jieba_version']}): install that version")
            self._jieba = jieba_instance()
        return list(self._jieba.cut(block, HMM=False))

    def block_words(self, block: str) -> list[tuple[int, int]]:
        """jieba's words in one block (its maximum-probability path, ASCII runs glued) as spans."""
        spans: list[tuple[int, int]] = []
        pos = 0
        if self.needs_jieba(block):
            for word in self.jieba_words(block):
                spans.append((pos, pos + len(word)))
                pos += len(word)
            return spans
        run = -1  # start of a run of single ASCII letters/digits
        lengths = self.lengths
        for tok in reversed(self.model.tokenize(block[::-1])):
            n = lengths[tok.id]
            if n < 0:
                if run < 0:
                    run = pos
                pos += 1
                continue
            if run >= 0:
                spans.append((run, pos))
                run = -1
            spans.append((pos, pos + n))
            pos += n
        if run >= 0:
            spans.append((run, pos))
        return spans

    def pieces(self, chunk: str) -> tuple[tuple[int, int, bool], ...]:
        """Pre-tokens of one ``block_split`` chunk: vocabulary words whole, other words cut by
        bert_basic.basic_spans, as (start, end, holds_removed) spans."""
        out = self._cache.get(chunk)
        if out is not None:
            return out
        words = [(0, len(chunk))] if len(chunk) == 1 or chunk == "\r\n" else self.block_words(chunk)
        found: list[tuple[int, int, bool]] = []
        vocab = self.vocab
        for start, end in words:
            word = chunk[start:end]
            if word in vocab:
                found.append((start, end, False))
            else:
                found.extend((start + a, start + b, dirty) for a, b, dirty in basic_spans(word))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[chunk] = out = tuple(found)
        return out

    def split(self, _: int, normalized):
        text = str(normalized)
        spans = self.pieces(text)
        if len(spans) == 1 and spans[0] == (0, len(text), False):
            return [normalized]
        out = []
        for start, end, dirty in spans:
            piece = normalized[start:end]
            if dirty:
                piece.filter(_kept)
            out.append(piece)
        return out

    def pre_tokenize(self, pretok) -> None:
        pretok.split(self.split)

    def cut(self, text: str) -> list[str]:
        """``jieba.cut(text, HMM=False)`` (for tests and measurements)."""
        out = []
        for chunk, _ in block_split(self.dictionary["block_class"]).pre_tokenize_str(text):
            if len(chunk) == 1 or chunk == "\r\n":
                out.append(chunk)
            else:
                out.extend(chunk[s:e] for s, e in self.block_words(chunk))
        return out
