"""Fast path vs. Python reference: how often do they give identical token ids?"""

from __future__ import annotations

import json
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


def bulk_vs_tokenizer_json(folder: str | Path, texts: list[str], examples: int = 5) -> dict:
    """The bulk encoder's ids (SentencePiece, float32 sums) against tokenizer.json's (float64):
    identical documents, and for the others whether they are ties (same text, score gap)."""
    from .bulk import BulkEncoder

    fast = load(folder)
    scores = [s for _, s in json.loads(fast.to_str())["model"]["vocab"]]
    got = BulkEncoder(folder).encode_batch(texts)
    want = [e.ids for e in fast.encode_batch_fast(texts, add_special_tokens=False)]
    differ = [i for i in range(len(texts)) if got[i] != want[i]]
    gaps = [abs(sum(scores[t] for t in got[i]) - sum(scores[t] for t in want[i])) for i in differ]
    diffs = []
    for i in differ[:examples]:
        k = first_difference(got[i], want[i])
        diffs.append({"bulk": [fast.id_to_token(t) for t in got[i][max(0, k - 2) : k + 3]],
                      "tokenizer_json": [fast.id_to_token(t) for t in want[i][max(0, k - 2) : k + 3]]})
    return {
        "documents": len(texts),
        "identical_documents": len(texts) - len(differ),
        "same_text_when_different": all(fast.decode(got[i]) == fast.decode(want[i]) for i in differ),
        "same_length_when_different": all(len(got[i]) == len(want[i]) for i in differ),
        "exact_ties": sum(g == 0 for g in gaps),
        "largest_score_gap": max(gaps, default=0.0),
        "examples": diffs,
    }


def released_agreement(folder: str | Path, recipe: str, vocab_file: str | Path, texts: list[str], examples: int = 50) -> dict:
    """A tokenizer.released folder against the literal recipe (tokenizer.released_reference):
    identical documents, and for each other document its first differing span."""
    from .loading import load_any_tokenizer
    from .released_reference import reference_for

    tok = load_any_tokenizer(folder)
    ref = reference_for(recipe, vocab_file)
    enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    diffs = []
    for n, (text, ids, offsets) in enumerate(zip(texts, enc["input_ids"], enc["offset_mapping"])):
        want = ref.encode(text)
        if ids == want:
            continue
        i = first_difference(ids, want)
        start = offsets[min(i, len(offsets) - 1)][0] if offsets else 0
        diffs.append({"document": n, "text": text[max(0, start - 10) : start + 20],
                      "fast": tok.convert_ids_to_tokens(ids[max(0, i - 2) : i + 3]),
                      "reference": tok.convert_ids_to_tokens(want[max(0, i - 2) : i + 3])})
    return {"recipe": recipe, "documents": len(texts), "identical_documents": len(texts) - len(diffs),
            "document_agreement": (len(texts) - len(diffs)) / max(len(texts), 1),
            "differences": diffs[:examples]}
