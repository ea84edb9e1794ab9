"""The minimum-length filter (``filters.min_chars``) on labelled short real texts.

    python bench/length_bench.py

``bench/data/length_labels.tsv`` holds keep/reject labels (by source and record index in
``bench/shared_corpora.py`` order; no text copied) for short records of the shared corpora: a
fixed-seed draw of at most 40 per source among the records with 1-9 non-whitespace characters
after the default cleaning (emoticon codes, mentions and retweet chains removed). Those are the
only records a minimum between 1 and 10 decides on: every longer record passes any of them, and an
empty one fails all. For each candidate minimum the whole default filter chain runs with that
minimum, so a short text another filter catches counts as caught.

The candidate is chosen on the labelled rows with an even position in the file (dev) and reported
on the odd ones (test): fewest false rejects plus junk kept, the stricter minimum on a tie. Also
printed: how many records of each shared corpus each minimum rejects as ``too_short``.
Writes bench/results/length.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import clean, filters  # noqa: E402
from pipeline.config import FilterConfig  # noqa: E402
from shared_corpora import SHARED, documents, labels as load_labels  # noqa: E402

CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10)


def verdict(text: str, chain: list) -> str | None:
    return next((r for _, fn in chain if (r := fn(text))), None)


def errors(rows: list[tuple[str, dict]], m: int) -> tuple[int, int, int, int]:
    """(keep-labelled rejected, keep, reject-labelled kept, reject) at minimum ``m``."""
    fr = sum(1 for label, v in rows if label == "keep" and v[m] is not None)
    jk = sum(1 for label, v in rows if label == "reject" and v[m] is None)
    return fr, sum(1 for label, _ in rows if label == "keep"), jk, sum(1 for label, _ in rows if label == "reject")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    if not (SHARED / "corpus").is_dir():
        print(f"shared data not found under {SHARED} (set ZH_SHARED_DATA)", file=sys.stderr)
        return 2
    labels = [(src, idx, label) for (src, idx), label in load_labels(ROOT / "bench/data/length_labels.tsv").items()]
    position = {(src, idx): k for k, (src, idx, _) in enumerate(labels)}
    chains = {m: filters.build_filters({"min_chars": m}) for m in CANDIDATES}
    cleaner = clean.build_cleaner({})
    default = FilterConfig().min_chars
    seen: Counter = Counter()
    short: dict[str, Counter] = {}
    labelled: dict[int, tuple[str, dict]] = {}
    for src, raw in documents():
        i = seen[src]
        seen[src] += 1
        if not raw.strip():
            continue
        text = cleaner(raw)
        n = filters._visible_length(text)
        per = short.setdefault(src, Counter())
        for m in CANDIDATES:
            per[m] += n < m
        k = position.get((src, i))
        if k is not None:
            labelled[k] = (labels[k][2], {m: verdict(text, chains[m]) for m in CANDIDATES})
    missing = len(labels) - len(labelled)
    if missing:
        print(f"{missing} labelled records not found in {SHARED}: the shared data differs from the labels'", file=sys.stderr)
        return 1
    dev = [labelled[k] for k in sorted(labelled) if k % 2 == 0]
    test = [labelled[k] for k in sorted(labelled) if k % 2 == 1]

    def cost(m: int) -> tuple[int, int]:
        fr, _, jk, _ = errors(dev, m)
        return fr + jk, -m

    chosen = min(CANDIDATES, key=cost)
    print(f"Minimum length (non-whitespace characters after cleaning) on {len(labelled)} labelled short "
          f"records ({sum(1 for l, _ in labelled.values() if l == 'keep')} keep, "
          f"{sum(1 for l, _ in labelled.values() if l == 'reject')} reject); the whole default filter chain runs")
    print("| min_chars | dev: false rejects | dev: junk kept | test: false rejects | test: junk kept |")
    print("|---:|---:|---:|---:|---:|")
    for m in CANDIDATES:
        d, t = errors(dev, m), errors(test, m)
        mark = " (chosen on dev)" if m == chosen else ""
        mark += " (default)" if m == default else ""
        print(f"| {m}{mark} | {d[0]} / {d[1]} | {d[2]} / {d[3]} | {t[0]} / {t[1]} | {t[2]} / {t[3]} |")
    print()
    print("Records shorter than each minimum after cleaning, per shared source:")
    print("| source | records | " + " | ".join(f"< {m}" for m in CANDIDATES) + " |")
    print("|---|---:|" + "---:|" * len(CANDIDATES))
    for src in sorted(short):
        print(f"| {src} | {seen[src]:,} | " + " | ".join(f"{short[src][m]:,}" for m in CANDIDATES) + " |")
    result = {
        "labelled": len(labelled), "default": default, "chosen_on_dev": chosen,
        "errors": {m: {"dev": errors(dev, m), "test": errors(test, m)} for m in CANDIDATES},
        "records": dict(seen), "shorter_than": {src: dict(per) for src, per in short.items()},
    }
    (ROOT / "bench/results/length.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
