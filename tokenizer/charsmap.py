"""pipeline.clean.normalize_unicode as one SentencePiece charsmap, for tokenizer.json.

Why: the normalizer used to be NFKC between 9 ``Replace`` steps that hide ，！？；：（）…～
from it and 9 that bring them back.  Every ``tokenizers`` normalizer step rewrites the
string and its per-byte alignments, so those 18 steps were a quarter of encode time.
A ``Precompiled`` charsmap rewrites, in one pass and only where something changes:

* every compatibility character except the protected punctuation to its NFKD form,
* the NFKC placeholders to their punctuation (as normalize_unicode's unprotect does),
* U+2581 "▁" to a space (tokenizer.normalize.normalize does that first).

``NFC`` then composes.  NFKC(s) is by definition NFC of the character-wise
compatibility decomposition of s, and characters without a compatibility mapping decompose
canonically under NFC itself, so ``NFC(charsmap(s))`` is normalize_unicode(s) exactly.

Known limit: ``tokenizers`` applies a charsmap to a grapheme cluster shorter than 6 bytes
as a whole, with the rule of its first character, so a mapped character directly followed
by a combining mark in such a cluster (full-width "Ｅ" + U+0301) loses the mark.  Text
from the corpus cleaner never has these.

The table is built from this Python's ``unicodedata``, the same tables the Python
reference normalizes with, and compiled by SentencePiece's own builder.
"""

from __future__ import annotations

import functools
import os
import tempfile
import unicodedata

from pipeline.clean import NFKC_PLACEHOLDERS

from .normalize import SPACE_MARK

_SURROGATES = range(0xD800, 0xE000)


def charsmap_rules() -> dict[str, str]:
    """{character: replacement} for every character the charsmap rewrites."""
    rules = {SPACE_MARK: " "}
    rules.update({p: c for c, p in NFKC_PLACEHOLDERS.items()})
    for cp in range(0x110000):
        if cp in _SURROGATES:
            continue
        c = chr(cp)
        if c in NFKC_PLACEHOLDERS or c in rules:
            continue
        nfkd = unicodedata.normalize("NFKD", c)
        if nfkd != unicodedata.normalize("NFD", c):  # a compatibility mapping somewhere inside
            rules[c] = nfkd
    return rules


def proto_fields(buf: bytes):
    """(field number, wire type, value) of each field of a serialized protobuf message:
    varints as int, length-delimited as bytes, fixed32/fixed64 as their raw bytes."""

    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = buf[i]
            value |= (b & 0x7F) << shift
            shift += 7
            i += 1
            if b < 0x80:
                return value, i

    i = 0
    while i < len(buf):
        key, i = varint(i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(i)
        elif wire == 2:
            size, i = varint(i)
            value, i = buf[i : i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i : i + size], i + size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        yield number, wire, value


def _proto_field(buf: bytes, field: int) -> bytes:
    """The first length-delimited ``field`` of a serialized protobuf message."""
    for number, wire, value in proto_fields(buf):
        if number == field and wire == 2:
            return value
    raise KeyError(field)


def compile_rules(rules: dict[str, str]) -> bytes:
    """{source: replacement} compiled by SentencePiece's builder (NormalizerSpec.precompiled_charsmap, field 2)."""
    import sentencepiece as spm

    spm.set_min_log_level(1)  # the builder's per-call INFO lines are noise in build logs
    fd, path = tempfile.mkstemp(suffix=".tsv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for src, dst in sorted(rules.items()):
                f.write(" ".join(f"{ord(ch):X}" for ch in src) + "\t" + " ".join(f"{ord(ch):X}" for ch in dst) + "\n")
        spec = spm.SentencePieceNormalizer(rule_tsv=path).serialized_normalizer_spec()
    finally:
        os.unlink(path)
    return _proto_field(spec, 2)


@functools.lru_cache(maxsize=1)
def precompiled_charsmap() -> bytes:
    """charsmap_rules() compiled: the first step of tokenizer.json's normalizer."""
    return compile_rules(charsmap_rules())
