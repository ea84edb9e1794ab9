"""Corpus-scale encoding: tokenizer.json's ids from SentencePiece's C++ Viterbi.

Why: ``tokenizers``' Unigram walks a trie of per-byte hash maps and allocates a
string for every dictionary match, which caps the transformers-loadable path at
about 5 MB/s per core.  SentencePiece runs the same maximum-score Viterbi (the
same loop: start positions left to right, matches shortest first, a strictly
better score replaces) over a double-array trie, about three times faster.
``jieba_unigram.model`` carries our vocabulary, ids and scores, and a charsmap
that does the whole of tokenizer.normalize in one pass:

* every character to ``normalize(character)`` (NFKC keeping ，！？…, lowercase);
* every whitespace character to " ", a piece of its own that no other piece
  contains, so it cuts the Viterbi exactly where the pre-tokenizer splits, and
  whose id is dropped from the output;
* whitespace followed by a character that normalizes to an ASCII letter/digit
  to "▁" + that normalization (mark_spaces; a longer run leaves " " pieces
  before it, dropped as well).

Character-wise rules equal normalize() on a whole text unless a character
interacts with its neighbours: marks and other characters that compose or
reorder under NFC or extend a grapheme cluster (tokenizer.json's charsmap step
rewrites a short cluster by its first character's rule, see tokenizer.charsmap),
Σ (Python lowercases a final sigma by context), characters that normalize to
whitespace plus something else, "▁" itself, and literal special tokens (which
tokenizer.json matches before normalizing).  A text with
any of those goes through tokenizer.json itself (``tokenizers``).

Scores: SentencePiece adds path scores in float32, ``tokenizers`` in float64.
A non-ASCII piece's score is stored minus its characters' scores, an ASCII piece's
plus a constant per character; either adds the same amount to every segmentation of
a text (the best path is the same) and keeps the stored scores and path sums small
(ASCII pieces score about -1000 each: stored as such, float32 rounding alone, 6e-5 a
piece, used to flip "1|37" and "13|7").  Where two segmentations score exactly the same or
within float32 rounding (repeats: 卡卡卡 is 卡+卡卡 or 卡卡+卡), each engine's
rounding picks one, so the two can differ there: 45 of the 122,255 bench
documents (``bench/tokenizer_bench.py`` reports the count; BENCHMARKS.md).
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct
import tempfile
import unicodedata
from pathlib import Path

from .charsmap import _SURROGATES, compile_rules
from .normalize import SPACE_MARK, WS_CLASS, normalize
from .vocab import ASCII_PIECE_PENALTY, BYTE_PIECES, UNK

MODEL_FILE = "jieba_unigram.model"
BOUNDARY = " "  # the piece that stands for whitespace between pre-tokens
POISON = "\U0010ffff"  # what a context-dependent character becomes: the text goes to tokenizer.json
_WS = re.compile(WS_CLASS)
_ALNUM_START = re.compile("[A-Za-z0-9]")
_MARKS = {"Mn", "Mc", "Me"}  # any mark, combining class 0 included (enclosing keycap, variation selectors)


def _composes_backward() -> set[str]:
    """Characters NFC may merge into the character before them (NFC_Quick_Check=Maybe, a superset)."""
    out = {chr(cp) for cp in range(0x1161, 0x1176)} | {chr(cp) for cp in range(0x11A8, 0x11C3)}  # Hangul V, T
    for cp in range(0x110000):
        if cp in _SURROGATES:
            continue
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<"):
            parts = d.split()
            if len(parts) == 2:
                out.add(chr(int(parts[1], 16)))
    return out


@functools.lru_cache(maxsize=2)
def char_table(lowercase: bool = True) -> tuple[dict[str, str], frozenset[str], frozenset[str], frozenset[str]]:
    """For every code point: (character -> replacement where it changes, characters that
    normalize to whitespace, characters whose normal form starts with an ASCII letter/digit,
    characters whose normal form depends on their neighbours)."""
    backward = _composes_backward()
    extenders = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: extend a grapheme cluster like marks do
    rules: dict[str, str] = {}
    space_like, alnum_start, hard = set(), set(), set()
    for cp in range(0x110000):
        if cp in _SURROGATES:
            continue
        c = chr(cp)
        n = normalize(c, lowercase)
        spaces = [bool(_WS.fullmatch(x)) for x in n]
        if (
            any(unicodedata.combining(x) or x in backward or x in extenders or unicodedata.category(x) in _MARKS for x in n)
            or "\u03a3" in unicodedata.normalize("NFKC", c)
            or (any(spaces) and not all(spaces))
            or c == SPACE_MARK  # "▁a" would need the identity rule SentencePiece refuses
            or c == POISON
        ):
            hard.add(c)
        elif spaces and all(spaces):
            space_like.add(c)
            if c != BOUNDARY:
                rules[c] = BOUNDARY
        else:
            if n != c:
                rules[c] = n
            if _ALNUM_START.match(n):
                alnum_start.add(c)
    return rules, frozenset(space_like), frozenset(alnum_start), frozenset(hard)


def charsmap_rules(lowercase: bool = True) -> dict[str, str]:
    """The character rules plus one rule per (whitespace, ASCII-run start) pair."""
    rules, space_like, alnum_start, hard = char_table(lowercase)
    out = dict(rules)
    out.update({c: POISON for c in hard if c != POISON})
    for w in space_like:
        for x in alnum_start:
            out[w + x] = SPACE_MARK + rules.get(x, x)
    return out


def specials_pattern(specials: list[str]) -> re.Pattern:
    """Literal special tokens, which tokenizer.json cuts out before normalizing."""
    return re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))


# ------------------------------------------------------------------ model file


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 fields are 10-byte varints
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    """One protobuf field: bytes/str length-delimited, float fixed32, int/bool varint."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    return _varint(number << 3) + _varint(int(value))


_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6  # SentencePiece.Type
# Per letter/digit (and "▁"): an ASCII piece scores about -ASCII_PIECE_PENALTY, so three
# characters' shift brings a typical piece near 0, where float32 keeps ~1e-6 precision.
_ASCII_SHIFT = ASCII_PIECE_PENALTY / 3


def model_proto(tokens: list[str], scores: list[float], specials: list[str], charsmap: bytes, byte_fallback: bool = False) -> bytes:
    """A SentencePiece ModelProto (sentencepiece_model.proto): our pieces with our ids, then BOUNDARY and POISON.

    A non-ASCII piece's score is stored minus its characters' scores (module docstring);
    ASCII pieces keep theirs.  A special is a CONTROL piece (never produced from text), a
    byte piece a BYTE piece (SentencePiece's own byte fallback, never matched as text).
    """
    index = {t: i for i, t in enumerate(tokens)}
    special = set(specials)
    byte_pieces = set(BYTE_PIECES) if byte_fallback else set()

    def shift(ch: str) -> float:
        if ch == SPACE_MARK or (ch.isascii() and ch.isalnum()):
            return _ASCII_SHIFT
        return 0.0 if ch.isascii() or ch not in index else -scores[index[ch]]

    out = bytearray()
    for t, s in zip(tokens, scores):
        if t == UNK:
            kind, rel = _UNKNOWN, 0.0
        elif t in special:
            kind, rel = _CONTROL, 0.0
        elif t in byte_pieces:
            kind, rel = _BYTE, 0.0
        else:
            kind, rel = _NORMAL, s + sum(shift(ch) for ch in t)
        out += _field(1, _field(1, t) + _field(2, float(rel)) + _field(3, kind))
    for extra in (BOUNDARY, POISON):
        out += _field(1, _field(1, extra) + _field(2, 0.0) + _field(3, _NORMAL))
    trainer = _field(3, 1) + _field(4, len(tokens) + 2) + _field(40, index[UNK])
    trainer += _field(41, -1) + _field(42, -1) + _field(43, -1)  # no bos / eos / pad pieces
    trainer += _field(35, byte_fallback)
    normalizer = _field(1, "tokenizer.normalize") + _field(2, charsmap)
    normalizer += _field(3, False) + _field(4, False) + _field(5, False)  # dummy prefix, space folding, escaping: off
    return bytes(out + _field(2, trainer) + _field(3, normalizer))


def _same_recipe(spec: dict, lowercase: bool) -> bool:
    """tokenizer.json has the model type, normalizer and pre-tokenizer that the charsmap rules replicate."""
    from .fast import build_unigram
    from .vocab import SPECIALS

    probe = json.loads(build_unigram(SPECIALS, [0.0] * len(SPECIALS), lowercase).to_str())
    return spec["model"]["type"] == "Unigram" and all(spec[k] == probe[k] for k in ("normalizer", "pre_tokenizer"))


def write_model(folder: str | Path) -> Path:
    """Write ``jieba_unigram.model`` next to tokenizer.json (what build_tokenizer calls)."""
    folder = Path(folder)
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    lowercase = "Lowercase" in json.dumps(spec["normalizer"])
    if not _same_recipe(spec, lowercase):
        raise ValueError(
            f"{folder}/tokenizer.json is not a jieba word + character Unigram with this version's normalizer "
            "(ALGO=sentencepiece, or an older build): the bulk encoder only reproduces `make tokenizer ALGO=wordpiece` folders")
    tokens = [t for t, _ in spec["model"]["vocab"]]
    scores = [s for _, s in spec["model"]["vocab"]]
    specials = [a["content"] for a in spec["added_tokens"]]
    proto = model_proto(tokens, scores, specials, compile_rules(charsmap_rules(lowercase)), spec["model"].get("byte_fallback", False))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(proto)
    os.replace(tmp, folder / MODEL_FILE)
    return folder / MODEL_FILE


class BulkEncoder:
    """``encode_batch(texts)``: tokenizer.json's ids (no [CLS]/[SEP]), SentencePiece's speed."""

    def __init__(self, folder: str | Path, num_threads: int | None = None):
        import sentencepiece as spm
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not (folder / MODEL_FILE).exists():
            write_model(folder)
        text = (folder / "tokenizer.json").read_text(encoding="utf-8")
        self.fast = Tokenizer.from_str(text)
        self.sp = spm.SentencePieceProcessor(model_file=str(folder / MODEL_FILE))
        spec = json.loads(text)
        tokens = [t for t, _ in spec["model"]["vocab"]] + [BOUNDARY, POISON]
        if self.sp.get_piece_size() != len(tokens) or any(self.sp.id_to_piece(i) != t for i, t in enumerate(tokens)):
            raise ValueError(f"{folder}/{MODEL_FILE} does not match tokenizer.json: delete it to rebuild")
        self.boundary, self.poison = len(tokens) - 2, len(tokens) - 1
        specials = [a["content"] for a in spec["added_tokens"]]
        self.specials = specials_pattern(specials)
        self.special_starts = sorted({s[0] for s in specials})
        self.num_threads = num_threads or os.cpu_count() or 1

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, without [CLS]/[SEP]."""
        out = self.sp.encode(texts, num_threads=self.num_threads)
        b, p, special, starts = self.boundary, self.poison, self.specials.search, self.special_starts
        slow = []
        for i, ids in enumerate(out):
            if p in ids or (any(c in texts[i] for c in starts) and special(texts[i])):
                slow.append(i)
            else:
                k = ids.count(b)
                if k > 16:
                    out[i] = [t for t in ids if t != b]
                else:  # a few boundaries (line breaks): C-level removal beats a Python loop
                    for _ in range(k):
                        ids.remove(b)
        if slow:
            for i, enc in zip(slow, self.fast.encode_batch_fast([texts[i] for i in slow], add_special_tokens=False)):
                out[i] = enc.ids
        return out

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]
