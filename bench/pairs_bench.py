"""Benchmark T5-PEGASUS pair construction on real documents.

1. Greedy vs exhaustive selection on documents with <= 12 sentences
   (cnews + C3): how often greedy reaches the optimum LCS and by how much it
   falls short otherwise.
2. Greedy make_pair throughput on the full cnews set (1,000 news articles),
   with the default document budget and without it.
3. LCS speed: bit-parallel big ints vs plain Python DP vs numpy row DP.

Writes bench/results/pairs.json and prints a markdown table for BENCHMARKS.md.
Run: .venv/bin/python bench/pairs_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.lcs import lcs_length, lcs_length_dp, lcs_length_numpy  # noqa: E402
from pipeline.pairs import (  # noqa: E402
    PairConfig,
    Rejected,
    document_sentences,
    exhaustive_pseudo_summary,
    make_pair,
    pseudo_summary,
)

SHARED = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))
RESULTS = Path(__file__).resolve().parent / "results" / "pairs.json"


def load_cnews() -> list[str]:
    path = SHARED / "corpus/thucnews_cnews_subset/cnews.val.txt"
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f if "\t" in line]


def load_c3() -> list[str]:
    docs = []
    for path in sorted((SHARED / "corpus/c3").glob("*.json")):
        with open(path, encoding="utf-8") as f:
            docs.extend("\n".join(item[0]) for item in json.load(f))
    return docs


def greedy_vs_exhaustive(texts: dict[str, list[str]], max_sentences: int) -> dict:
    """Optimum rate and relative LCS shortfall of greedy, per corpus and overall."""
    config = PairConfig()
    out = {}
    all_short = []
    for name, docs in texts.items():
        shortfalls = []
        t_greedy = t_exh = 0.0
        for text in docs:
            sentences = document_sentences(text, config)
            if not config.min_sentences <= len(sentences) <= max_sentences:
                continue
            t0 = time.perf_counter()
            _, greedy = pseudo_summary(sentences, config.ratio)
            t1 = time.perf_counter()
            _, best = exhaustive_pseudo_summary(sentences, config.ratio)
            t2 = time.perf_counter()
            t_greedy += t1 - t0
            t_exh += t2 - t1
            # Both F1 scores share the denominator (document length), so this is the LCS shortfall.
            shortfalls.append(0.0 if best == 0 else max(0.0, 1.0 - greedy / best))
        all_short.extend(shortfalls)
        out[name] = _shortfall_summary(shortfalls) | {
            "greedy_s": round(t_greedy, 3),
            "exhaustive_s": round(t_exh, 3),
        }
    out["all"] = _shortfall_summary(all_short)
    return out


def _shortfall_summary(shortfalls: list[float]) -> dict:
    misses = [s for s in shortfalls if s > 0]
    n = len(shortfalls)
    return {
        "documents": n,
        "optimum_rate": round(1 - len(misses) / n, 4) if n else None,
        "mean_shortfall": round(statistics.fmean(shortfalls), 5) if n else None,
        "mean_shortfall_when_missed": round(statistics.fmean(misses), 4) if misses else 0.0,
        "max_shortfall": round(max(shortfalls), 4) if n else None,
    }


def throughput(docs: list[str], **cfg) -> dict:
    t0 = time.perf_counter()
    results = [make_pair({"id": i, "text": text}, **cfg) for i, text in enumerate(docs)]
    elapsed = time.perf_counter() - t0
    written = sum(not isinstance(r, Rejected) for r in results)
    return {
        "documents": len(docs),
        "pairs": written,
        "rejected": len(docs) - written,
        "seconds": round(elapsed, 3),
        "docs_per_s": round(len(docs) / elapsed, 1),
        "pairs_per_s": round(written / elapsed, 1),
    }


def lcs_speed(cnews: list[str]) -> list[dict]:
    """Time each LCS implementation on the same pseudo-summary-shaped string pairs."""
    text = "".join(sorted(cnews, key=len)[len(cnews) // 2 :])  # long real text to cut from
    rows = []
    for len_a, len_b, reps in [(64, 256, 50), (256, 1024, 10), (1024, 1024, 3), (2048, 4096, 1)]:
        a, b = text[:len_a], text[len_a : len_a + len_b]
        row = {"len_a": len_a, "len_b": len_b}
        lcs = None
        for name, fn in (("bitparallel", lcs_length), ("numpy", lcs_length_numpy), ("python_dp", lcs_length_dp)):
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                value = fn(a, b)
                best = min(best, time.perf_counter() - t0)
            assert lcs is None or value == lcs, "implementations disagree"
            lcs = value
            row[f"{name}_ms"] = round(best * 1e3, 4)
        row["lcs"] = lcs
        row["speedup_vs_dp"] = round(row["python_dp_ms"] / row["bitparallel_ms"], 1)
        row["speedup_vs_numpy"] = round(row["numpy_ms"] / row["bitparallel_ms"], 1)
        rows.append(row)
    return rows


def markdown(results: dict) -> str:
    ge, tp, tp_all = results["greedy_vs_exhaustive"], results["throughput_cnews"], results["throughput_cnews_no_budget"]
    lines = [
        "### T5-PEGASUS pseudo-summary pairs (`bench/pairs_bench.py`)",
        "",
        f"Greedy vs exhaustive (ratio 0.25, documents with {PairConfig().min_sentences}–{results['max_sentences']} sentences):",
        "",
        "| corpus | documents | greedy = optimum | mean LCS shortfall | shortfall when missed | worst |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in ge.items():
        if r["documents"]:
            lines.append(
                f"| {name} | {r['documents']} | {100 * r['optimum_rate']:.1f}% | {100 * r['mean_shortfall']:.3f}% "
                f"| {100 * r['mean_shortfall_when_missed']:.2f}% | {100 * r['max_shortfall']:.2f}% |"
            )
    lines += [
        "",
        "Greedy `make_pair` throughput, cnews (1,000 news articles, one core):",
        "",
        "| document budget | pairs | rejected | seconds | pairs/s |",
        "|---|---:|---:|---:|---:|",
        f"| default (1,280 chars) | {tp['pairs']} | {tp['rejected']} | {tp['seconds']} | {tp['pairs_per_s']} |",
        f"| whole document | {tp_all['pairs']} | {tp_all['rejected']} | {tp_all['seconds']} | {tp_all['pairs_per_s']} |",
        "",
        "LCS length, best of n runs (ms):",
        "",
        "| len(a) × len(b) | bit-parallel | numpy row DP | Python DP | speedup vs DP | vs numpy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["lcs_speed"]:
        lines.append(
            f"| {r['len_a']} × {r['len_b']} | {r['bitparallel_ms']} | {r['numpy_ms']} | {r['python_dp_ms']} "
            f"| {r['speedup_vs_dp']}× | {r['speedup_vs_numpy']}× |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-sentences", type=int, default=12)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if not (SHARED / "corpus").exists():
        print(f"shared data not found under {SHARED} (set ZH_SHARED_DATA)", file=sys.stderr)
        return 1
    cnews, c3 = load_cnews(), load_c3()
    results = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "max_sentences": args.max_sentences,
        "greedy_vs_exhaustive": greedy_vs_exhaustive({"cnews": cnews, "c3": c3}, args.max_sentences),
        "throughput_cnews": throughput(cnews),
        "throughput_cnews_no_budget": throughput(cnews, max_doc_chars=0),
        "lcs_speed": lcs_speed(cnews),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
