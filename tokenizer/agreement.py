"""Fast path vs. Python reference: how often do they give identical token ids?"""

from __future__ import annotations

from pathlib import Path

from .fast import load
from .reference import JiebaWordPieceTokenizer


def first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _spans(tokens: list[str]) -> set[tuple[int, int]]:
    spans, pos = set(), 0
    for t in tokens:
        spans.add((pos, pos + len(t)))
        pos += len(t)
    return spans


def agreement(folder: str | Path, texts: list[str], examples: int = 5, dictionary: str = "vocab", engine: str = "tokenizers") -> dict:
    """Share of documents where both paths give identical ids, token-span agreement, a few diffs.

    ``engine``: the fast path measured, tokenizer.json (``"tokenizers"``) or the
    SentencePiece bulk encoder (``"bulk"``, tokenizer.bulk).
    """
    fast = load(folder)
    ref = JiebaWordPieceTokenizer.from_pretrained(folder, dictionary=dictionary)
    if engine == "bulk":
        from .bulk import BulkEncoder

        fast_ids = BulkEncoder(folder).encode_batch(texts)
    elif engine == "tokenizers":
        fast_ids = [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]
    else:
        raise ValueError(f"engine must be 'tokenizers' or 'bulk', not {engine!r}")
    same_docs, ref_tokens, matched, diffs = 0, 0, 0, []
    for text, f in zip(texts, fast_ids):
        r = ref.encode(text)
        ref_tokens += len(r)
        if f == r:
            same_docs += 1
            matched += len(r)
            continue
        matched += len(_spans([ref.tokens[t] for t in r]) & _spans([ref.tokens[t] for t in f]))
        i = first_difference(f, r)
        if len(diffs) < examples:
            diffs.append(
                {
                    "fast": [fast.id_to_token(t) for t in f[max(0, i - 3) : i + 4]],
                    "reference": [ref.tokens[t] for t in r[max(0, i - 3) : i + 4]],
                }
            )
    return {
        "documents": len(texts),
        "identical_documents": same_docs,
        "document_agreement": same_docs / max(len(texts), 1),
        "reference_tokens": ref_tokens,
        "token_agreement": matched / max(ref_tokens, 1),  # reference tokens whose span the fast path also has
        "examples": diffs,
    }
