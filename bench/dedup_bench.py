"""Near-duplicate benchmark: real Chinese documents with synthetic edits, through the real pipeline.

    python bench/dedup_bench.py [--originals 600] [--seed 0]

Originals are real documents from ``$ZH_SHARED_DATA/corpus`` (THUCNews articles, C3 passages,
Wikipedia paragraphs, ChID passages; 200-3000 characters). Each gets 0-3 copies, each made by one
edit (labels: the copies and their original form one cluster):

* ``repost``: a repost/source prefix and a suffix (转发/【转载】 ... 来源/原文链接/责任编辑);
* ``traditional``: simplified -> traditional (OpenCC s2t);
* ``fullwidth``: ASCII letters/digits to full-width and Chinese/ASCII punctuation swapped;
* ``reorder``: paragraphs (or sentences when there is one paragraph) shuffled;
* ``partial``: a contiguous 70-90 % of the document;
* ``combo``: repost + fullwidth + a few deleted characters.

Hard negatives, each its own cluster: distinct originals wrapped in one long boilerplate header
and footer (``boilerplate``); splices of 60 % of one original and 40 % of another (``splice``:
character Jaccard ~0.4 with its first source, below a partial copy's 0.7-0.9); and topical
neighbours (same news category) - different documents.

The corpus is written as JSON lines and run through ``pipeline.run.run_pipeline`` with the
cleaning defaults and only exact + near dedup after it (the other filters off, so that every
document reaches dedup); the predicted clusters come from ``rejects/duplicate_*.jsonl.gz``
(dropped id -> kept id). Originals are split in halves: thresholds are tuned on ``dev`` and the
figures reported on ``test``. Pair metrics are over all same-cluster pairs; drop metrics count a
dropped document as correct when it has a gold duplicate that was written.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("ZH_SHARED_DATA", ROOT.parent / "shared" / "data"))
EDITS = ("repost", "traditional", "fullwidth", "reorder", "partial", "combo")
PREFIXES = ["转发：", "【转载】", "//@新闻速递:", "分享一篇好文章：", "【重磅】", "#热点# "]
SUFFIXES = ["（来源：新华网）", "原文链接请见评论区。", "（责任编辑：王明）", "欢迎转发分享！", "本文来自网络，如有侵权请联系删除。"]
HEADER = "本站讯 欢迎访问本站新闻频道，更多精彩资讯请关注我们的官方账号，每日更新国内外要闻、财经、体育、娱乐新闻。\n"
FOOTER = "\n免责声明：本站转载的文章仅代表作者个人观点，与本站立场无关。如有侵权请联系我们，我们将在第一时间删除处理。"


def originals(seed: int) -> list[tuple[str, str]]:
    """(group, text) real documents of 200-3000 characters."""
    c = SHARED / "corpus"
    docs = []
    for line in (c / "thucnews_cnews_subset/cnews.val.txt").open(encoding="utf-8"):
        label, text = line.rstrip("\n").split("\t", 1)
        docs.append((f"news:{label}", text))
    for name in ("c3-m-train.json", "c3-m-dev.json"):
        docs += [("c3", "\n".join(d[0])) for d in json.loads((c / "c3" / name).read_text(encoding="utf-8"))]
    for line in (c / "zhwiki_sample/wiki_00_a.jsonl").open(encoding="utf-8"):
        docs += [("wiki", p) for p in json.loads(line)["text"].split("\n\n")]
    for line in (c / "fewclue/chid_unlabeled.json").open(encoding="utf-8"):
        docs.append(("chid", json.loads(line)["content"]))
    docs = [(g, t.strip()) for g, t in docs if 200 <= len(t.strip()) <= 3000]
    random.Random(seed).shuffle(docs)
    seen, out = set(), []
    for g, t in docs:                       # no exact repeats among the originals themselves
        if t not in seen:
            seen.add(t)
            out.append((g, t))
    return out


def _fullwidth(text: str, rng) -> str:
    swap = {"，": ",", "。": ".", "：": ":", "；": ";", "！": "!", "？": "?", "（": "(", "）": ")"}
    out = []
    for ch in text:
        if "!" <= ch <= "~" and ch.isalnum():
            out.append(chr(ord(ch) + 0xFEE0))
        elif ch in swap and rng.random() < 0.7:
            out.append(swap[ch])
        else:
            out.append(ch)
    return "".join(out)


def _units(text: str) -> list[str]:
    paras = [p for p in text.split("\n") if p.strip()]
    if len(paras) >= 3:
        return paras
    return [s for s in re.split(r"(?<=[。！？])", text) if s]


def edit(text: str, kind: str, rng) -> str:
    if kind == "repost":
        return rng.choice(PREFIXES) + text + rng.choice(SUFFIXES)
    if kind == "traditional":
        import opencc
        return opencc.OpenCC("s2t").convert(text)
    if kind == "fullwidth":
        return _fullwidth(text, rng)
    if kind == "reorder":
        units = _units(text)
        shuffled = units[:]
        while len(units) > 1 and shuffled == units:
            rng.shuffle(shuffled)
        return ("\n" if "\n" in text else "").join(shuffled)
    if kind == "partial":
        n = len(text)
        keep = int(n * rng.uniform(0.7, 0.9))
        start = rng.randint(0, n - keep)
        return text[start:start + keep]
    if kind == "combo":
        t = _fullwidth(rng.choice(PREFIXES) + text + rng.choice(SUFFIXES), rng)
        drop = set(rng.sample(range(len(t)), max(1, len(t) // 100)))
        return "".join(ch for i, ch in enumerate(t) if i not in drop)
    raise ValueError(kind)


def build(seed: int, n: int) -> dict[str, list[dict]]:
    """{'dev': records, 'test': records}; record: id, text, cluster, kind."""
    rng = random.Random(seed)
    pool = originals(seed)
    used, splits = pool[:n], {"dev": [], "test": []}
    for i, (group, text) in enumerate(used):
        split = "dev" if i % 2 == 0 else "test"
        recs = splits[split]
        recs.append({"id": f"o{i}", "text": text, "cluster": f"c{i}", "kind": "original", "group": group})
        for j in range(rng.choice([0, 1, 1, 2, 3])):
            kind = rng.choice(EDITS)
            if kind == "reorder" and len(_units(text)) < 3:
                kind = "repost"
            recs.append({"id": f"o{i}e{j}", "text": edit(text, kind, rng), "cluster": f"c{i}", "kind": kind,
                         "group": group, "of": f"o{i}"})
    # boilerplate negatives: fresh originals wrapped in one shared header/footer, one cluster each
    for k, (group, text) in enumerate(pool[n:n + n // 5]):
        splits["dev" if k % 2 == 0 else "test"].append(
            {"id": f"b{k}", "text": HEADER + text[:300] + FOOTER, "cluster": f"b{k}", "kind": "boilerplate", "group": group})
    # splice negatives: 60 % of an original (of the same split) + 40 % of the next one
    for split, recs in splits.items():
        origs = [r for r in recs if r["kind"] == "original"]
        for k in range(0, len(origs) - 1, 4):
            a, b = origs[k]["text"], origs[k + 1]["text"]
            recs.append({"id": f"s{split}{k}", "text": a[:int(len(a) * 0.6)] + b[int(len(b) * 0.6):],
                         "cluster": f"s{split}{k}", "kind": "splice", "group": origs[k]["group"]})
    return splits


def run(records: list[dict], threshold: float, ngram: int, workdir: str) -> list[tuple[str, str]]:
    """(dropped id, kept id) edges from the real pipeline (exact + near dedup)."""
    from pipeline.run import run_pipeline

    src = Path(workdir) / "in.jsonl"
    src.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n"
                           for r in records), encoding="utf-8")
    out = Path(workdir) / "out"
    off = {k: None for k in ("min_chinese_ratio", "max_punctuation_ratio", "max_digit_ratio",
                             "max_repeated_line_ratio", "max_repeated_ngram_ratio")}
    over = {"filters": {**off, "min_chars": 1},
            "dedup": {"threshold": threshold, "ngram": ngram},
            **{s: {"enabled": False} for s in ("pii", "wordlists", "langid", "decontam")}}
    run_pipeline([str(src)], str(out), overrides=over)
    edges = []
    for name in ("duplicate_exact", "duplicate_near"):
        path = out / "rejects" / f"{name}.jsonl.gz"
        if path.exists():
            with gzip.open(path, "rt", encoding="utf-8") as f:
                edges += [(r["id"], r["kept_id"]) for r in map(json.loads, f)]
    return edges


def score(records: list[dict], edges: list[tuple[str, str]]) -> dict:
    gold = {r["id"]: r["cluster"] for r in records}
    parent = {i: i for i in gold}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for a, b in edges:
        parent[find(a)] = find(b)
    pred = {i: find(i) for i in gold}
    clusters_g, clusters_p = defaultdict(list), defaultdict(list)
    for i in gold:
        clusters_g[gold[i]].append(i)
        clusters_p[pred[i]].append(i)
    true_pairs = {frozenset(p) for c in clusters_g.values() for p in itertools.combinations(c, 2)}
    pred_pairs = {frozenset(p) for c in clusters_p.values() for p in itertools.combinations(c, 2)}
    tp = len(true_pairs & pred_pairs)
    p = tp / len(pred_pairs) if pred_pairs else 1.0
    r = tp / len(true_pairs) if true_pairs else 1.0
    dropped = {a for a, _ in edges}
    written = set(gold) - dropped
    good_drops = sum(1 for a in dropped if any(gold[w] == gold[a] for w in clusters_g[gold[a]] if w in written))
    should_drop = sum(len(c) - 1 for c in clusters_g.values())
    return {"pairs": len(true_pairs), "pair_precision": p, "pair_recall": r,
            "pair_f1": 2 * p * r / (p + r) if p + r else 0.0, "drops": len(dropped),
            "drop_precision": good_drops / len(dropped) if dropped else 1.0,
            "drop_recall": good_drops / should_drop if should_drop else 1.0,
            "by_kind": _recall_by_kind(records, pred)}


def _recall_by_kind(records, pred):
    out = defaultdict(lambda: [0, 0])
    for r in records:
        if "of" in r:
            out[r["kind"]][0] += pred[r["id"]] == pred[r["of"]]
            out[r["kind"]][1] += 1
    return {k: v[0] / v[1] for k, v in sorted(out.items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--originals", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--thresholds", default="0.5,0.6,0.7,0.8")
    ap.add_argument("--ngrams", default="3,5")
    args = ap.parse_args(argv)
    if not (SHARED / "corpus").is_dir():
        print(f"shared data not found under {SHARED} (set ZH_SHARED_DATA)", file=sys.stderr)
        return 2
    splits = build(args.seed, args.originals)
    grid = [(float(t), int(n)) for t in args.thresholds.split(",") for n in args.ngrams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        dev = {(t, n): score(splits["dev"], run(splits["dev"], t, n, tmp)) for t, n in grid}
        best = max(grid, key=lambda g: (dev[g]["pair_f1"], -g[0]))
        default = (0.8, 5)
        test = {g: score(splits["test"], run(splits["test"], *g, tmp)) for g in dict.fromkeys([best, default])}
    n_test = len(splits["test"])
    print(f"Near-duplicate detection, exact + MinHash (128 permutations, 16 bands) after cleaning "
          f"(dev: {len(splits['dev'])} documents, test: {n_test}; threshold/ngram tuned on dev)")
    print("| split | threshold | char n-gram | pair precision | pair recall | pair F1 | drop precision | drop recall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for g, r in sorted(dev.items()):
        print(f"| dev | {g[0]} | {g[1]} | {r['pair_precision']:.3f} | {r['pair_recall']:.3f} | {r['pair_f1']:.3f} | "
              f"{r['drop_precision']:.3f} | {r['drop_recall']:.3f} |")
    for g, r in test.items():
        tag = "test (tuned)" if g == best else "test (default)"
        print(f"| {tag} | {g[0]} | {g[1]} | {r['pair_precision']:.3f} | {r['pair_recall']:.3f} | {r['pair_f1']:.3f} | "
              f"{r['drop_precision']:.3f} | {r['drop_recall']:.3f} |")
    print()
    print("Recall per edit on test (copy clustered with its original)")
    print("| setting | " + " | ".join(EDITS) + " |")
    print("|---|" + "---:|" * len(EDITS))
    for g, r in test.items():
        print(f"| threshold {g[0]}, n-gram {g[1]} | " + " | ".join(f"{r['by_kind'].get(k, float('nan')):.3f}" for k in EDITS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
