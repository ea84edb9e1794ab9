"""Text normalization and the pre-token classes shared by every tokenizer path.

The Rust fast path (tokenizer.json), the Python reference and the Beam counting
job must cut text the same way, so the rules live here once:

* normalize: the corpus pipeline's own Unicode step (pipeline.clean.normalize_unicode:
  NFKC, so full-width letters/digits -> ASCII, but Chinese punctuation ，！？；：（）…～
  kept as is; idempotent) then lowercase (the T5 PEGASUS / bert4keras recipe),
  U+2581 mapped to space.  Already-clean text therefore keeps its punctuation
  through ``decode(encode(x))``, and a model never learns "," inside Chinese.
* pieces: whitespace only separates; an ASCII letter/digit run is one piece and
  carries ``SPACE_MARK`` when whitespace precedes it (so "hello world" decodes
  back with its space); a run of CJK ideographs in jieba's range is one piece;
  every other character is a piece of its own (jieba yields those one by one).
  No vocabulary entry crosses a piece boundary, which is why tokenizer.json
  only needs to split on whitespace.
"""

from __future__ import annotations

import re

from pipeline.clean import normalize_unicode

SPACE_MARK = "\u2581"  # "▁", the SentencePiece/Metaspace word-start marker
# Python's str.isspace() set, spelled out so the Oniguruma regex in
# tokenizer.json and Python's re agree (jieba splits on Python's \s).
WS_CLASS = r"[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
CJK_CLASS = r"[\u4e00-\u9fd5]"  # jieba's re_han_default ideograph range
ALNUM_CLASS = r"[A-Za-z0-9]"  # jieba's re_eng: buffered into one word

# Same patterns, written once for Python and once (escaped) for tokenizer.json.
SPACE_BEFORE_ALNUM = WS_CLASS + "+(?=" + ALNUM_CLASS + ")"
WS_RUN = WS_CLASS + "+"
PIECE = SPACE_MARK + "?" + ALNUM_CLASS + "+|" + CJK_CLASS + "+|."

_space_before_alnum = re.compile(SPACE_BEFORE_ALNUM)
_ws_run = re.compile(WS_RUN)
_piece = re.compile(PIECE, re.S)
_alnum_run = re.compile(ALNUM_CLASS + "+")
_cjk_run = re.compile(CJK_CLASS + "+")
_ws_only = re.compile(WS_RUN)


def normalize(text: str, lowercase: bool = True, keep_cjk_punctuation: bool = True) -> str:
    """What the tokenizer.json normalizer does (before space marking).

    ``keep_cjk_punctuation=False`` is plain NFKC, for folders built before the
    normalizer kept Chinese punctuation.
    """
    text = normalize_unicode(text.replace(SPACE_MARK, " "), keep_cjk_punctuation)
    return text.lower() if lowercase else text


def mark_spaces(text: str) -> str:
    """Replace a whitespace run that precedes an ASCII letter/digit by SPACE_MARK."""
    return _space_before_alnum.sub(SPACE_MARK, text)


def pieces(text: str) -> list[str]:
    """Cut marked text into pieces (whitespace dropped)."""
    out: list[str] = []
    for chunk in _ws_run.split(text):
        out.extend(_piece.findall(chunk))
    return out


def is_alnum_run(piece: str) -> bool:
    """An ASCII run piece, optionally carrying the space marker."""
    return _alnum_run.fullmatch(piece.removeprefix(SPACE_MARK)) is not None


def is_cjk_run(piece: str) -> bool:
    return _cjk_run.fullmatch(piece) is not None


def is_space(piece: str) -> bool:
    return _ws_only.fullmatch(piece) is not None


def canonical(text: str, lowercase: bool = True, keep_cjk_punctuation: bool = True) -> str:
    """The text that ``decode(encode(text))`` returns (no [UNK] involved).

    Normalized, whitespace runs kept as one space only before an ASCII
    letter/digit (so between English words), dropped elsewhere.
    """
    marked = mark_spaces(normalize(text, lowercase, keep_cjk_punctuation))
    return _ws_run.sub("", marked).replace(SPACE_MARK, " ")
