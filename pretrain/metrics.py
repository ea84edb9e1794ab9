"""Text metrics used in validation: character-level ROUGE-1/2/L (F1).

Character level because Chinese has no spaces; this is how T5 PEGASUS and the
CSL benchmark report ROUGE for Chinese titles and summaries.
"""
from __future__ import annotations

from collections import Counter

from pipeline.lcs import lcs_length


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def _ngrams(s: str, n: int) -> Counter:
    return Counter(s[i:i + n] for i in range(len(s) - n + 1))


def rouge_chars(pred: str, ref: str) -> dict[str, float]:
    """Character ROUGE-1/2/L F1 of one prediction against one reference (spaces ignored)."""
    pred, ref = "".join(pred.split()), "".join(ref.split())
    out = {}
    for n in (1, 2):
        pc, rc = _ngrams(pred, n), _ngrams(ref, n)
        out[f"rouge{n}"] = _f1(sum((pc & rc).values()), sum(pc.values()), sum(rc.values()))
    out["rougeL"] = _f1(lcs_length(pred, ref), len(pred), len(ref))
    return out


def corpus_rouge(preds: list[str], refs: list[str]) -> dict[str, float]:
    """Mean per-example character ROUGE F1 over a corpus."""
    if not preds:
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    scores = [rouge_chars(p, r) for p, r in zip(preds, refs)]
    return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}
