"""Quality filters: each a named pure function ``text -> reason | None``.

A filter returns the reject reason (a short snake_case string that becomes a
key of ``stats.json["rejected"]``) or ``None`` when the document passes.
``build_filters(cfg)`` returns the filters enabled in the ``filters:`` section
of configs/pipeline.yaml; ``first_failure`` applies them cheapest first.
Ratios are over non-whitespace characters, so layout does not matter.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from pipeline.config import FilterConfig

import numpy as np

Filter = Callable[[str], Optional[str]]



# Character classes for the ratio filters, as one lookup table over all code
# points: counting with numpy is ~20x faster than a \p{P}-style regex class.
WS, CJK, PUNCT, DIGIT, LATIN = 1, 2, 3, 4, 5


def _class_table() -> np.ndarray:
    table = np.zeros(sys.maxunicode + 1, dtype=np.uint8)
    for cp in range(sys.maxunicode + 1):
        if 0x40000 <= cp < 0xE0000:
            continue
        cat = unicodedata.category(chr(cp))
        if cat[0] in "PS":
            table[cp] = PUNCT
        elif cat == "Nd":
            table[cp] = DIGIT
    for a, b in ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FFFF)):
        table[a : b + 1] = CJK
    for c in " \t\n\r\x0b\x0c\u3000\u00a0":
        table[ord(c)] = WS
    table[ord("A"):ord("Z") + 1] = LATIN
    table[ord("a"):ord("z") + 1] = LATIN
    return table


_CLASS = _class_table()


@functools.lru_cache(maxsize=8)
def _class_stats(text: str) -> tuple[int, int, int, int, int, int]:
    """(visible, cjk, punctuation, digit, ASCII letter, punctuation run) counts in one pass;
    cached because the ratio filters run one after another on the same string."""
    if not text:
        return (0, 0, 0, 0, 0, 0)
    cls = _CLASS[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    counts = np.bincount(cls, minlength=6)
    runs = 0
    if counts[PUNCT]:
        p = cls == PUNCT
        runs = int(p[0]) + int(np.count_nonzero(p[1:] & ~p[:-1]))
    return (len(text) - int(counts[WS]), int(counts[CJK]), int(counts[PUNCT]), int(counts[DIGIT]),
            int(counts[LATIN]), runs)


def char_class_counts(text: str) -> tuple[int, int, int, int]:
    """(visible, cjk, punctuation, digit) character counts."""
    return _class_stats(text)[:4]


def _visible_length(text: str) -> int:
    return len(text) - sum(map(text.count, (" ", "\n", "\t")))


def length_filter(text: str, min_chars: int = 4, max_chars: int = 100_000) -> Optional[str]:
    """``too_short`` / ``too_long`` by non-whitespace character count."""
    n = _visible_length(text)
    if n < min_chars:
        return "too_short"
    if n > max_chars:
        return "too_long"
    return None


def chinese_ratio(text: str) -> float:
    """Han characters / visible characters, a run of punctuation counted as one character (as
    the punctuation filter counts it): ``满意！！！！！！！`` is an emphatic review, not a text
    without Chinese."""
    n, cjk, punct, _, _, runs = _class_stats(text)
    units = n - punct + runs
    return cjk / units if units else 0.0


def chinese_ratio_filter(text: str, min_ratio: float = 0.3) -> Optional[str]:
    """``low_chinese_ratio``: too few Han characters (code, English, spam)."""
    return "low_chinese_ratio" if chinese_ratio(text) < min_ratio else None


def repeated_line_ratio(text: str) -> float:
    """Fraction of characters in lines that repeat an earlier line."""
    lines = [line for line in text.split("\n") if line]
    if len(lines) < 2:
        return 0.0
    seen: set[str] = set()
    dup = total = 0
    for line in lines:
        total += len(line)
        if line in seen:
            dup += len(line)
        else:
            seen.add(line)
    return dup / total if total else 0.0


def repeated_lines_filter(text: str, max_ratio: float = 0.3) -> Optional[str]:
    """``repeated_lines``: boilerplate repeated line after line."""
    return "repeated_lines" if repeated_line_ratio(text) > max_ratio else None


_MIX = np.uint64(0x9E3779B97F4A7C15)


def ngram_hashes(codepoints: np.ndarray, n: int) -> np.ndarray:
    """64-bit polynomial hashes of every character n-gram (uint64, wraps)."""
    m = len(codepoints) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    cp = codepoints.astype(np.uint64)
    for k in range(n):  # array arithmetic wraps silently (no errstate needed)
        h = h * _MIX + cp[k : k + m] + np.uint64(1)
    return h


_PUNCT_RUN = re.compile(r"([^\w\s])\1+")


def repeated_ngram_ratio(text: str, n: int = 10) -> float:
    """Fraction of characters covered by a character n-gram that occurs more
    than once (Gopher's duplicate n-gram fraction, on characters), whitespace
    removed; the smaller of that and the same with each run of one punctuation
    mark counted once, as the punctuation filter counts it: ``值得购买！！！！！！！！``
    is an emphatic review, not a repeated phrase (43 of 82k real reviews were
    rejected for it).  One text of ``repeated_ngram_ratios``."""
    return float(repeated_ngram_ratios([text], n)[0])


def repeated_ngram_ratios(texts: list[str], n: int = 10) -> np.ndarray:
    """``repeated_ngram_ratio`` of every text of a batch, in numpy passes over the batch."""
    stripped = ["".join(t.split()) for t in texts]     # = re.sub(r"\s+", "", t), twice as fast
    ratio = _repeated_ratios(stripped, n)
    runs = [(i, _PUNCT_RUN.sub(r"\1", stripped[i])) for i in np.flatnonzero(ratio > 0).tolist()]
    runs = [(i, r) for i, r in runs if len(r) < len(stripped[i])]
    if runs:
        at = np.array([i for i, _ in runs])
        ratio[at] = np.minimum(ratio[at], _repeated_ratios([r for _, r in runs], n))
    return ratio


_DOC_MIX = np.uint64(0xD6E8FEB86659FD93)


def _repeated_ratios(texts: list[str], n: int) -> np.ndarray:
    """Per text, the share of its characters covered by an n-gram seen twice in that text (0 for
    texts shorter than 2n). The n-grams of the whole batch are hashed in one pass; a document's
    n-gram is its hash plus a multiple of the document's index, so one sort finds the repeats
    inside every document at once (equal 64-bit keys for different n-grams: ~2^-64 a pair)."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    out = np.zeros(len(texts))
    windows = np.where(lengths >= 2 * n, lengths - n + 1, 0)
    total = int(windows.sum())
    if not total:
        return out
    cp = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    first = np.cumsum(windows) - windows
    pos = np.arange(total, dtype=np.int64) + np.repeat(np.cumsum(lengths) - lengths - first, windows)   # n-gram starts
    key = ngram_hashes(cp, n)[pos] + np.repeat(np.arange(len(texts), dtype=np.uint64), windows) * _DOC_MIX
    order = np.argsort(key)
    same = key[order[1:]] == key[order[:-1]]
    dup = np.zeros(total, bool)
    dup[1:] = same
    dup[:-1] |= same
    starts = pos[order[dup]]
    if not starts.size:
        return out
    depth = np.cumsum(np.bincount(starts, minlength=cp.size + n) - np.bincount(starts + n, minlength=cp.size + n))
    covered = np.bincount(np.repeat(np.arange(len(texts)), lengths)[depth[: cp.size] > 0], minlength=len(texts))
    return np.divide(covered, lengths, out=out, where=lengths > 0)


def repeated_ngrams_filter(text: str, n: int = 10, max_ratio: float = 0.5) -> Optional[str]:
    """``repeated_ngrams``: the same phrase over and over (spam, SEO text)."""
    return "repeated_ngrams" if repeated_ngram_ratio(text, n) > max_ratio else None


# A number ("19500", "3-4", "0.93", "2011:05") is one unit, like a word: a headline with a price
# and a date is still mostly words. A run of punctuation ("！！！！", "”“") is one unit too: an
# emphatic review is not a punctuation table.
_NUMBER_RE = re.compile(r"\d+(?:[.,:/\-]\d+)*")
_LATIN_RE = re.compile(r"[A-Za-z]+")
# U+FFFD anywhere; "?" only as 1-3 lost characters inside a Chinese phrase (每次失眠都?想起?去的得?失,
# 北京??州): a question mark ends a clause and emphatic "？？？" runs are longer or trail off.
_MOJIBAKE_RE = re.compile(r"\ufffd|(?<=[\u3400-\u9fff])\?{1,3}(?=[\u3400-\u9fff])")


def unit_counts(text: str) -> tuple[int, int, int]:
    """(word units, numbers, punctuation runs): a Han character, a Latin word and a number are
    one unit each, punctuation and symbols are counted as runs, not characters."""
    n, _, punct, digit, letters, runs = _class_stats(text)
    if not n:
        return (0, 0, 0)
    numbers = len(_NUMBER_RE.findall(text)) if digit else 0
    latin_words = len(_LATIN_RE.findall(text)) if letters else 0
    return (n - punct - digit - letters + numbers + latin_words, numbers, runs)


def punctuation_ratio(text: str) -> float:
    """Punctuation runs per unit (runs + word units)."""
    words, _, runs = unit_counts(text)
    return runs / (words + runs) if words + runs else 0.0


def digit_ratio(text: str) -> float:
    """Numbers per word unit."""
    words, numbers, _ = unit_counts(text)
    return numbers / words if words else 0.0


def mojibake_ratio(text: str) -> float:
    """Share of characters that are a "?" or U+FFFD next to non-ASCII text: GBK/UTF-8 mix-ups."""
    if "?" not in text and "\ufffd" not in text:
        return 0.0
    n = char_class_counts(text)[0]
    if not n:
        return 0.0
    return sum(map(len, _MOJIBAKE_RE.findall(text))) / n


def punctuation_filter(text: str, max_ratio: float = 0.5) -> Optional[str]:
    """``too_much_punctuation``: emoticon strings, tables of symbols."""
    return "too_much_punctuation" if punctuation_ratio(text) > max_ratio else None


def digit_filter(text: str, max_ratio: float = 0.4) -> Optional[str]:
    """``too_many_digits``: price lists, phone lists, tables of numbers."""
    return "too_many_digits" if digit_ratio(text) > max_ratio else None


def mojibake_filter(text: str, max_ratio: float = 0.1) -> Optional[str]:
    """``mojibake``: text whose characters were lost to "?" in a bad encoding conversion."""
    return "mojibake" if mojibake_ratio(text) > max_ratio else None


def build_filters(cfg: "FilterConfig | dict | None" = None) -> list[tuple[str, Filter]]:
    """Enabled filters of a ``filters:`` section (defaults: ``pipeline.config.FilterConfig``),
    cheapest first.  A threshold set to ``null`` switches its filter off."""
    from pipeline.config import FilterConfig, section

    c = section(FilterConfig, cfg)
    out: list[tuple[str, Filter]] = [
        ("length", functools.partial(length_filter, min_chars=c.min_chars or 0, max_chars=c.max_chars or float("inf")))]
    if c.min_chinese_ratio is not None:
        out.append(("chinese_ratio", functools.partial(chinese_ratio_filter, min_ratio=c.min_chinese_ratio)))
    if c.max_punctuation_ratio is not None:
        out.append(("punctuation", functools.partial(punctuation_filter, max_ratio=c.max_punctuation_ratio)))
    if c.max_digit_ratio is not None:
        out.append(("digits", functools.partial(digit_filter, max_ratio=c.max_digit_ratio)))
    if c.max_mojibake_ratio is not None:
        out.append(("mojibake", functools.partial(mojibake_filter, max_ratio=c.max_mojibake_ratio)))
    if c.max_repeated_line_ratio is not None:
        out.append(("repeated_lines", functools.partial(repeated_lines_filter, max_ratio=c.max_repeated_line_ratio)))
    if c.max_repeated_ngram_ratio is not None:
        out.append(("repeated_ngrams", functools.partial(repeated_ngrams_filter, n=c.repeated_ngram_n,
                                                         max_ratio=c.max_repeated_ngram_ratio)))
    return out


def _batch_ratios(texts: list[str]) -> dict[str, np.ndarray]:
    """Per text, the quantities of the length and ratio filters, for a whole batch in numpy
    passes over the texts laid end to end: the same integers ``_visible_length``,
    ``_class_stats`` and ``unit_counts`` give one text at a time (numbers and Latin words are
    counted as runs, as their regular expressions match them)."""
    n = len(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    cp = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    cls = _CLASS[cp]
    doc = np.repeat(np.arange(n), lengths)
    counts = np.bincount(doc * 6 + cls, minlength=6 * n).reshape(n, 6)
    has_prev = np.ones(cp.size, bool)                  # the previous character is in the same text
    has_prev[(np.cumsum(lengths) - lengths)[lengths > 0]] = False

    def runs(mask):
        return np.bincount(doc[mask & ~(np.r_[False, mask[:-1]] & has_prev)], minlength=n)

    digit = cls == DIGIT
    # "3.5", "2011:05", "3-4": one number; a separator joins two digit runs of the same text
    sep = np.isin(cp, _NUMBER_SEPARATORS)
    joins = np.flatnonzero(sep[1:-1] & digit[:-2] & digit[2:] & has_prev[1:-1] & has_prev[2:]) + 1
    numbers = runs(digit) - np.bincount(doc[joins], minlength=n)
    visible = lengths - counts[:, WS]
    words = visible - counts[:, PUNCT] - counts[:, DIGIT] - counts[:, LATIN] + numbers + runs(cls == LATIN)
    return {"layout": lengths - np.bincount(doc[np.isin(cp, _LAYOUT)], minlength=n), "visible": visible,
            "cjk": counts[:, CJK], "punct": counts[:, PUNCT], "punct_runs": runs(cls == PUNCT), "numbers": numbers,
            "words": words}


_NUMBER_SEPARATORS = np.array([ord(c) for c in ".,:/-"], np.uint32)
_LAYOUT = np.array([ord(c) for c in " \n\t"], np.uint32)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0.0 where den is 0 (as the one-text functions return)."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den != 0)


def _batch_reasons(fn, r: dict, texts: list[str], alive: np.ndarray) -> Optional[np.ndarray]:
    """Per text, does the filter ``fn`` (as ``build_filters`` makes it) reject it? None when
    ``fn`` is not one of the length, ratio and repeated n-gram filters: those are decided per
    text. The repeated n-grams are measured for the texts still standing (``alive``) only."""
    f, kw = getattr(fn, "func", None), getattr(fn, "keywords", {})
    if f is length_filter:
        return np.where(r["layout"] < kw["min_chars"], "too_short", np.where(r["layout"] > kw["max_chars"], "too_long", ""))
    if f is chinese_ratio_filter:
        return np.where(_ratio(r["cjk"], r["visible"] - r["punct"] + r["punct_runs"]) < kw["min_ratio"],
                        "low_chinese_ratio", "")
    if f is punctuation_filter:
        units = r["words"] + r["punct_runs"]
        return np.where(_ratio(r["punct_runs"], units) > kw["max_ratio"], "too_much_punctuation", "")
    if f is digit_filter:
        return np.where(_ratio(r["numbers"], r["words"]) > kw["max_ratio"], "too_many_digits", "")
    if f is repeated_ngrams_filter and {"n", "max_ratio"} <= kw.keys():
        at = np.flatnonzero(alive)
        out = np.full(len(texts), "", dtype="<U15")
        out[at[repeated_ngram_ratios([texts[i] for i in at.tolist()], kw["n"]) > kw["max_ratio"]]] = "repeated_ngrams"
        return out
    return None


def first_failures(texts: list[str], filters: list[tuple[str, Filter]]) -> list[Optional[str]]:
    """``first_failure`` of each text: the length, ratio and repeated n-gram filters decided for
    the whole batch in numpy, the others (repeated lines, mojibake) per text still standing."""
    out: list[Optional[str]] = [None] * len(texts)
    if not texts:
        return out
    ratios = _batch_ratios(texts)
    alive = np.ones(len(texts), bool)
    for _, fn in filters:
        reasons = _batch_reasons(fn, ratios, texts, alive)
        if reasons is None:
            for i in np.flatnonzero(alive).tolist():
                reason = fn(texts[i])
                if reason is not None:
                    out[i] = reason
                    alive[i] = False
        else:
            hit = np.flatnonzero(alive & (reasons != ""))
            for i, reason in zip(hit.tolist(), reasons[hit].tolist()):
                out[i] = reason
            alive[hit] = False
    return out


def first_failure(text: str, filters: list[tuple[str, Filter]]) -> Optional[str]:
    """The reject reason of the first failing filter, or None."""
    for _, fn in filters:
        reason = fn(text)
        if reason is not None:
            return reason
    return None
