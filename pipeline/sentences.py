"""Chinese sentence splitting for T5-PEGASUS pseudo-summary construction.

What is preserved: every non-whitespace character of the input, in order.
Each sentence is a verbatim substring of the text with leading/trailing
whitespace stripped, so whitespace *inside* a sentence (e.g. "New York") is
kept, while whitespace *between* sentences (newlines, paragraph indents such as
U+3000) is dropped.  Formally, ``text == w0 + s1 + w1 + s2 + ... + sn + wn``
where every ``wi`` is whitespace-only (or empty) and ``si`` are the sentences.
In particular ``"".join(s.split())`` of the joined sentences equals the text
with all whitespace removed.
"""

from __future__ import annotations

import re

# Sentence terminators: full-width 。！？； the ellipsis …, half-width !?;.
# The half-width '.' is deliberately absent: it mostly appears in numbers,
# URLs and abbreviations inside Chinese text.
TERMINATORS = "。！？；…!?;"
# Closing quotes/brackets that belong to the sentence they close when they
# directly follow its terminator: 他说：“好。”
CLOSERS = "”’」』）》】〉)]\"'"
# Soft break points for cutting sentences that are too long.
SOFT_BREAKS = "，、,：:"

_T = re.escape(TERMINATORS)
_C = re.escape(CLOSERS)
# A sentence is a run of non-terminators (no newline) optionally ended by a
# run of terminators (……, ！？) plus any closers; or a bare terminator run.
# Newlines match neither branch, so finditer() treats them as boundaries.
_SENTENCE = re.compile(rf"[^{_T}\n]+(?:[{_T}]+[{_C}]*)?|[{_T}]+[{_C}]*")


def split_sentences(text: str, max_len: int = 256) -> list[str]:
    """Split Chinese text into sentences of at most ``max_len`` characters.

    Splits after 。！？；… !?; (keeping the terminator run and any following
    closing quote/bracket) and at newlines; sentences longer than ``max_len``
    are cut after the last ，、,：: that fits, else hard-cut at ``max_len``.
    Never returns empty or whitespace-only sentences.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    sentences: list[str] = []
    for match in _SENTENCE.finditer(text):
        sentence = match.group().strip()
        if sentence:
            sentences.extend(_cut_long(sentence, max_len))
    return sentences


def _cut_long(sentence: str, max_len: int) -> list[str]:
    """Cut an over-long sentence at soft breaks, hard-cutting only when needed."""
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_len:
        window = rest[:max_len]
        cut = max(window.rfind(ch) for ch in SOFT_BREAKS) + 1  # 0 if none found
        if cut == 0:
            cut = max_len
        piece, rest = rest[:cut].strip(), rest[cut:].strip()
        if piece:
            pieces.append(piece)
    if rest:
        pieces.append(rest)
    return pieces
