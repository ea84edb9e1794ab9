"""Pure-Python reference tokenizer: the T5 PEGASUS recipe, used to measure the fast path.

jieba (HMM off) segments the normalized text; a jieba word that is in the
vocabulary is one token, otherwise it falls back to smaller pieces: CJK words
to characters, ASCII letter/digit runs to the fewest vocabulary pieces (the
same Unigram scores as tokenizer.json, replicated below with the Rust
tie-breaking), any other character to itself, to its UTF-8 byte pieces (byte
fallback) or to [UNK].  Whitespace only separates, except before an ASCII run
where it becomes the "▁" marker.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.clean import NFKC_PLACEHOLDERS

from .jieba_util import USER_DICT_FILE, jieba_instance, vocab_jieba
from .normalize import SPACE_MARK, is_alnum_run, is_cjk_run, is_space, normalize, pieces
from .vocab import BYTE_PIECE, BYTE_PIECES, CLS, SEP, UNK

K_UNK_PENALTY = 10.0  # tokenizers' Unigram: unk score = min score - 10


class UnigramViterbi:
    """Bit-for-bit replica of ``tokenizers`` Unigram ``encode_optimized`` (fuse_unk on)."""

    def __init__(self, tokens: list[str], scores: list[float], unk_id: int):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.scores = scores
        self.unk_id = unk_id
        self.unk_score = min(scores) - K_UNK_PENALTY
        self.max_len = max(len(t) for t in tokens)

    def __call__(self, text: str) -> list[int]:
        n = len(text)
        best = [0.0] * (n + 1)
        start: list[int | None] = [None] * (n + 1)
        tok: list[int] = [0] * (n + 1)
        ids, scores = self.ids, self.scores
        for i in range(n):
            here = best[i]
            has_single = False
            for j in range(i + 1, min(n, i + self.max_len) + 1):  # trie order: shortest first
                tid = ids.get(text[i:j])
                if tid is None:
                    continue
                cand = here + scores[tid]
                if start[j] is None or cand > best[j]:
                    best[j], start[j], tok[j] = cand, i, tid
                if j == i + 1:
                    has_single = True
            if not has_single:
                cand = here + self.unk_score
                if start[i + 1] is None or cand > best[i + 1]:
                    best[i + 1], start[i + 1], tok[i + 1] = cand, i, self.unk_id
        out: list[int] = []
        j = n
        while j > 0:
            tid = tok[j]
            if not (tid == self.unk_id and out and out[-1] == self.unk_id):
                out.append(tid)
            j = start[j]
        out.reverse()
        return out


class JiebaWordPieceTokenizer:
    """jieba (HMM off) + vocabulary lookup + piece fallback, sharing tokenizer.json's vocab."""

    def __init__(
        self,
        tokens: list[str],
        scores: list[float],
        lowercase: bool = True,
        user_dict: str | None = None,
        dictionary: str = "vocab",
        keep_cjk_punctuation: bool = True,
        byte_fallback: bool = False,
    ):
        """``dictionary="jieba"``: jieba's full dictionary, the literal T5 PEGASUS recipe
        (a long dictionary word outside the vocabulary falls back to characters).
        ``dictionary="vocab"``: jieba's algorithm with the vocabulary's CJK words as
        its dictionary (same frequencies), which is what tokenizer.json computes.
        """
        if dictionary not in ("jieba", "vocab"):
            raise ValueError("dictionary must be 'jieba' or 'vocab'")
        self.tokens = tokens
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.unk_id = self.vocab[UNK]
        self.byte_ids = [self.vocab[b] for b in BYTE_PIECES] if byte_fallback else None
        self.lowercase = lowercase
        self.keep_cjk_punctuation = keep_cjk_punctuation
        self.user_dict = user_dict
        self.viterbi = UnigramViterbi(tokens, scores, self.unk_id)
        base = jieba_instance(user_dict)
        self.jieba = base if dictionary == "jieba" else vocab_jieba([t for t in tokens if is_cjk_run(t)], base)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, user_dict: str | None = None, dictionary: str = "vocab"
    ) -> "JiebaWordPieceTokenizer":
        """Load the vocabulary and scores from a folder written by build_tokenizer
        (and the jieba user dictionary it was built with, saved there as USER_DICT_FILE)."""
        if user_dict is None and (Path(folder) / USER_DICT_FILE).exists():
            user_dict = str(Path(folder) / USER_DICT_FILE)
        spec = json.loads((Path(folder) / "tokenizer.json").read_text(encoding="utf-8"))
        vocab = spec["model"]["vocab"]
        normalizer = json.dumps(spec["normalizer"], ensure_ascii=False)
        lowercase = "Lowercase" in normalizer
        # False only for folders from before the normalizer kept Chinese punctuation (plain
        # NFKC); keeping it is a charsmap now (tokenizer.charsmap), Replace pairs before that.
        keep_punct = '"Precompiled"' in normalizer or all(p in normalizer for p in NFKC_PLACEHOLDERS.values())
        return cls([t for t, _ in vocab], [s for _, s in vocab], lowercase, user_dict, dictionary, keep_punct,
                   spec["model"].get("byte_fallback", False))

    def unknown(self, ch: str) -> list[int]:
        """A character outside the vocabulary: its UTF-8 bytes, or [UNK] without byte fallback."""
        return [self.byte_ids[b] for b in ch.encode("utf-8")] if self.byte_ids else [self.unk_id]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = []
        unk = self.unk_id
        pending_space = False
        chunk_start = True  # the fast path fuses consecutive [UNK]s between two whitespace runs

        def push(tid: int) -> None:
            nonlocal chunk_start
            if not (tid == unk and not chunk_start and ids and ids[-1] == unk):
                ids.append(tid)
            chunk_start = False

        norm = normalize(text, self.lowercase, self.keep_cjk_punctuation)
        for word in self.jieba.cut(norm, HMM=False):
            if is_space(word):
                pending_space = chunk_start = True
                continue
            if pending_space and is_alnum_run(word[:1]):
                word = SPACE_MARK + word
            pending_space = False
            for piece in pieces(word):  # jieba may glue classes ("c++", "4s店")
                if piece in self.vocab:
                    push(self.vocab[piece])
                elif is_cjk_run(piece):
                    for ch in piece:
                        for tid in [self.vocab[ch]] if ch in self.vocab else self.unknown(ch):
                            push(tid)
                elif is_alnum_run(piece):
                    for tid in self.viterbi(piece):
                        push(tid)
                else:
                    for tid in self.unknown(piece):
                        push(tid)
        if add_special_tokens:
            ids = [self.vocab[CLS]] + ids + [self.vocab[SEP]]
        return ids

    def tokenize(self, text: str) -> list[str]:
        return [self.tokens[i] for i in self.encode(text)]

    def decode(self, ids: list[int]) -> str:
        out, pending = [], bytearray()  # consecutive byte pieces form one UTF-8 sequence
        for t in (self.tokens[i] for i in ids):
            if BYTE_PIECE.fullmatch(t):
                pending.append(int(t[3:5], 16))
                continue
            if pending:
                out.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            out.append(t)
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out).replace(SPACE_MARK, " ")
