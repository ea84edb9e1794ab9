"""Digit / punctuation / mojibake filters before and after the recalibration, on labelled real text.

    python bench/ratio_bench.py

``bench/data/ratio_labels.tsv`` holds keep/reject labels (by source and record index in
``bench/shared_corpora.py`` order; no text copied) for 284 documents drawn from those that the old
or the new filters reject in the shared corpora: headlines with prices and dates, emphatic
reviews, numbered lists, question-mark mojibake, symbol strings. "Before" is the old rule
(digit characters / visible characters > 0.3, punctuation characters / visible > 0.3, no mojibake
filter); "after" is ``pipeline.filters`` with the ``filters:`` defaults (numbers and punctuation
runs count as one unit; "?"/U+FFFD inside Chinese text > 0.1). Also: all 20,000 THUCNews
headlines (every one a real headline), rejected before and after.

Second and third tables: the repeated-n-gram and Chinese-ratio filters, whose measures now count
a punctuation run once (``值得购买！！！！！！`` is emphasis, not a repeated phrase nor a text without
Chinese), on ``bench/data/repeated_labels.tsv`` and ``bench/data/chinese_ratio_labels.tsv``.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import clean, filters  # noqa: E402
from shared_corpora import SHARED, documents, labels as load_labels  # noqa: E402


def old_rule(text: str):
    n, _, punct, digit = filters.char_class_counts(text)
    if n and digit / n > 0.3:
        return "too_many_digits"
    if n and punct / n > 0.3:
        return "too_much_punctuation"
    return None


def new_rule(text: str, fs=filters.build_filters({})):
    names = {"digits", "punctuation", "mojibake"}
    return next((r for name, fn in fs if name in names and (r := fn(text))), None)


def main() -> int:
    if not (SHARED / "corpus").is_dir():
        print(f"shared data not found under {SHARED} (set ZH_SHARED_DATA)", file=sys.stderr)
        return 2
    labels = load_labels(ROOT / "bench/data/ratio_labels.tsv")
    cleaner = clean.build_cleaner({})
    seen: dict[str, int] = {}
    rows = {"before": [0, 0, 0, 0], "after": [0, 0, 0, 0]}    # keep rejected, keep, junk caught, junk
    headlines = {"before": 0, "after": 0, "n": 0}
    for src, raw in documents():
        i = seen.get(src, 0)
        seen[src] = i + 1
        label = labels.get((src, i))
        if label is None and src != "titles":
            continue
        text = cleaner(raw)
        verdicts = {"before": old_rule(text), "after": new_rule(text)}
        if src == "titles":
            headlines["n"] += 1
            for k, v in verdicts.items():
                headlines[k] += v is not None
        if label is not None:
            for k, v in verdicts.items():
                if label == "keep":
                    rows[k][0] += v is not None
                    rows[k][1] += 1
                else:
                    rows[k][2] += v is not None
                    rows[k][3] += 1
    print(f"Digit/punctuation/mojibake filters on {sum(rows['after'][1::2])} labelled real documents "
          f"({rows['after'][1]} keep, {rows['after'][3]} reject) and {headlines['n']} THUCNews headlines")
    print("| rule | false rejects (keep-labelled rejected) | junk caught | headlines rejected |")
    print("|---|---:|---:|---:|")
    for k, r in rows.items():
        print(f"| {k} | {r[0]} / {r[1]} ({r[0] / r[1]:.1%}) | {r[2]} / {r[3]} ({r[2] / r[3]:.1%}) | "
              f"{headlines[k]} / {headlines['n']} ({headlines[k] / headlines['n']:.2%}) |")
    punctuation_run_tables()
    return 0


def _old_chinese_ratio(text: str) -> float:
    n, cjk, _, _ = filters.char_class_counts(text)
    return cjk / n if n else 0.0


def punctuation_run_tables() -> None:
    """``repeated_ngrams`` before (every character counts) and after (the smaller of that and
    the same with each punctuation run counted once), on ``bench/data/repeated_labels.tsv``;
    ``low_chinese_ratio`` before (Han / visible characters) and after (a punctuation run counts
    as one character), on ``bench/data/chinese_ratio_labels.tsv``."""
    labelled_table("Repeated-n-gram filter", "repeated_labels.tsv",
                   lambda t: filters._repeated_ratios(["".join(t.split())], 10)[0] > 0.5,
                   lambda t: filters.repeated_ngrams_filter(t) is not None)
    labelled_table("Chinese-ratio filter", "chinese_ratio_labels.tsv",
                   lambda t: _old_chinese_ratio(t) < 0.3,
                   lambda t: filters.chinese_ratio_filter(t) is not None)


def labelled_table(title: str, label_file: str, before, after) -> None:
    labels = load_labels(ROOT / "bench/data" / label_file)
    cleaner = clean.build_cleaner({})
    rules = {"before": before, "after": after}
    rows = {k: [0, 0, 0, 0] for k in rules}    # keep rejected, keep, junk caught, junk
    seen: dict[str, int] = {}
    for src, raw in documents():
        i = seen.get(src, 0)
        seen[src] = i + 1
        label = labels.get((src, i))
        if label is None:
            continue
        text = cleaner(raw)
        for k, rule in rules.items():
            hit = rule(text)
            if label == "keep":
                rows[k][0] += hit
                rows[k][1] += 1
            else:
                rows[k][2] += hit
                rows[k][3] += 1
    print()
    print(f"{title} on {sum(rows['after'][1::2])} labelled real documents the old measure rejected "
          f"({rows['after'][1]} keep, {rows['after'][3]} reject)")
    print("| measure | false rejects (keep-labelled rejected) | junk caught |")
    print("|---|---:|---:|")
    for k, r in rows.items():
        print(f"| {k} | {r[0]} / {r[1]} | {r[2]} / {r[3]} |")


if __name__ == "__main__":
    sys.exit(main())
