"""One place that creates jieba segmenters (default dictionary + optional user dict).

Kept separate so the Beam workers, the vocabulary scorer and the reference
tokenizer all see the same dictionary and therefore the same frequencies.
"""

from __future__ import annotations

import functools
import logging

# The extra jieba dictionary a vocabulary was built with, saved next to tokenizer.json:
# its frequencies are the Unigram scores, so the reference tokenizer needs it to reload.
USER_DICT_FILE = "jieba_user_dict.txt"


@functools.lru_cache(maxsize=8)
def jieba_instance(user_dict: str | None = None):
    """An initialized ``jieba.Tokenizer``; cached per user dictionary path."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    dt = jieba.Tokenizer()
    dt.initialize()
    if user_dict:
        dt.load_userdict(user_dict)
    return dt


def cut(text: str, user_dict: str | None = None) -> list[str]:
    """jieba with the HMM off, as in the T5 PEGASUS recipe."""
    return jieba_instance(user_dict).lcut(text, HMM=False)


def vocab_jieba(words, base=None):
    """A jieba segmenter whose dictionary is only ``words`` (scored with the base frequencies).

    This is exactly what the Unigram fast path computes: jieba's DAG/max-probability
    cut, restricted to the vocabulary, with ``log(freq or 1) - log(total)`` of the
    base dictionary (default jieba dict + user dict).
    """
    import jieba

    base = base or jieba_instance()
    freq: dict[str, int] = {}
    for w in words:
        freq[w] = base.FREQ.get(w) or 1
    for w in list(freq):
        for i in range(1, len(w)):
            freq.setdefault(w[:i], 0)
    dt = jieba.Tokenizer()
    dt.FREQ, dt.total, dt.initialized = freq, base.total, True
    return dt
