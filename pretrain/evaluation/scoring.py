"""Metrics of the fine-tuning tasks: accuracy, macro-F1, CMRC 2018 EM/F1, paired bootstrap.

CMRC 2018 follows the official evaluation procedure (the CMRC 2018 evaluation script, v5):

* both strings are lower-cased and stripped;
* **F1**: each string is segmented "mixed": every CJK character (U+4E00..U+9FA5) is one
  segment; the official punctuation list (``CMRC_PUNCT``) is removed; every other run of
  characters (Latin letters, digits, spaces, other symbols) is word-tokenized. Precision and
  recall are the length of the longest common *contiguous* run of segments divided by the
  prediction's / the answer's segment count; F1 is their harmonic mean (0 without overlap);
* **EM**: the strings are equal after removing the punctuation list (spaces and other
  characters kept);
* a question scores the maximum over its reference answers; the corpus score is the mean
  over all questions (unanswered ones count 0), times 100.

The official script word-tokenizes the non-CJK runs with NLTK's ``word_tokenize``. NLTK is
not a dependency here: ``word_tokenize`` below follows its Treebank rules that matter for
answers (whitespace and punctuation split; 1,000 / 3.14 / 10:30 and dotted abbreviations
such as U.S.A kept whole; "..." one token). Contractions (don't -> do n't) are not split.
"""
from __future__ import annotations

import re

import numpy as np

# The official list, in its order. "……" is two characters, so a single character never
# matches it: a lone "…" is kept, as in the official script.
CMRC_PUNCT = frozenset(['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=', '，', '。', '：', '？', '！', '“',
                        '”', '；', '’', '《', '》', '……', '·', '、', '「', '」', '（', '）', '－', '～', '『', '』'])
_CJK = re.compile(r"[\u4e00-\u9fa5]")
_WORD = re.compile(r"\d+(?:[.,:]\d+)+|\w+(?:\.\w+)+|\w+|\.\.\.|\S")


def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else 0.0


def macro_f1(pred, gold) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in gold or predictions."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    scores = []
    for c in np.union1d(pred, gold):
        tp = float(np.sum((pred == c) & (gold == c)))
        denom = float(np.sum(pred == c) + np.sum(gold == c))
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def word_tokenize(text: str) -> list[str]:
    return _WORD.findall(text)


def mixed_segmentation(text: str, remove_punct: bool = True) -> list[str]:
    """CJK characters one by one, punctuation-list characters alone (or dropped), other runs word-tokenized."""
    out, run = [], []
    for ch in str(text).lower().strip():
        if remove_punct and ch in CMRC_PUNCT:
            continue
        if _CJK.match(ch) or ch in CMRC_PUNCT:
            if run:
                out += word_tokenize("".join(run))
                run = []
            out.append(ch)
        else:
            run.append(ch)
    if run:
        out += word_tokenize("".join(run))
    return out


def remove_punctuation(text: str) -> str:
    return "".join(ch for ch in str(text).lower().strip() if ch not in CMRC_PUNCT)


def longest_common_run(a: list[str], b: list[str]) -> int:
    """Length of the longest contiguous run of segments shared by a and b."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_f1(prediction: str, answers: list[str]) -> float:
    pred = mixed_segmentation(prediction)
    best = 0.0
    for answer in answers:
        ans = mixed_segmentation(answer)
        common = longest_common_run(ans, pred)
        if common:
            p, r = common / len(pred), common / len(ans)
            best = max(best, 2 * p * r / (p + r))
    return best


def cmrc_em(prediction: str, answers: list[str]) -> float:
    pred = remove_punctuation(prediction)
    return float(any(remove_punctuation(a) == pred for a in answers))


def paired_bootstrap(scores_a, scores_b, resamples: int = 1000, seed: int = 0, scale: float = 1.0) -> dict:
    """Mean per-example score of A minus B, resampling examples (the same rows for both).

    ``scores_*``: shape (seeds, n) or (n,); each seed's score of each test example (0/1
    correctness, or a CMRC F1). Averaging over seeds first is exact because the metric is a
    mean, so the interval covers test-set sampling with the seeds' variation averaged in.
    Returns the difference and its 95% percentile interval (times ``scale``, e.g. 100 for percent
    points) and the share of resamples <= 0.
    """
    a = np.atleast_2d(np.asarray(scores_a, dtype=np.float64)).mean(0)
    b = np.atleast_2d(np.asarray(scores_b, dtype=np.float64)).mean(0)
    if a.shape != b.shape or not len(a):
        raise ValueError("paired bootstrap needs per-example scores of the same examples")
    d = a - b
    rng = np.random.default_rng(seed)
    deltas = np.array([d[rng.integers(0, len(d), len(d))].mean() for _ in range(resamples)])
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return {"delta": scale * float(d.mean()), "ci95": [scale * float(lo), scale * float(hi)],
            "share_not_better": float(np.mean(deltas <= 0)), "resamples": resamples}
