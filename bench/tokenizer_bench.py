"""Tokenizer benchmark on >= 20 MB of real Chinese text from the shared corpora.

Same run, same text: our bulk encoder (tokenizer.bulk: the same vocabulary and
scores in SentencePiece's C++ Viterbi), our tokenizer.json (tokenizers, single and
batched, and via AutoTokenizer), the Python jieba reference (T5 PEGASUS recipe), and
BertTokenizerFast with the BERT-Chinese character vocabulary.  Also chars per
token on held-out news and fast-vs-reference agreement; the released vocabularies'
exact tokenizers (tokenizer.released) against their literal recipes ("released"),
and a SentencePiece-only folder (tokenizer.spiece) against the sentencepiece
library ("spiece"), agreement and speed.  Writes bench/results/tokenizer.json.

    python bench/tokenizer_bench.py [--tokenizer DIR] [--mb 20] [--ref-mb 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))
CORPUS = SHARED / "corpus"
NEWS_HELD_OUT = 200  # last cnews documents: never used to build the vocabulary


def news_docs() -> list[str]:
    lines = (CORPUS / "thucnews_cnews_subset" / "cnews.val.txt").read_text(encoding="utf-8").splitlines()
    return [ln.split("\t", 1)[1] for ln in lines if "\t" in ln]


# The other document-like files of the shared corpora, in the bench's order (chid's #idiom# blanks dropped).
OTHER_FILES = [
    "corpus/zhwiki_sample/wiki_00_a.jsonl", "corpus/zhwiki_sample/wiki_00_b.jsonl",
    "corpus/c3/c3-m-train.json", "corpus/c3/c3-m-dev.json", "corpus/c3/c3-m-test.json", "corpus/c3/c3-d-dev.json",
    "corpus/cmrc2018/cmrc2018_dev.json", "corpus/cmrc2018/cmrc2018_trial.json",
    "corpus/fewclue/chid_unlabeled.json", "corpus/fewclue/csldcp_test_public.json",
    "corpus/fewclue/iflytek_test_public.json", "corpus/fewclue/eprstmt_unlabeled.json",
    "corpus/sophonplus_reviews/ChnSentiCorp_htl_all.csv", "corpus/sophonplus_reviews/waimai_10k.csv",
    "corpus/sophonplus_reviews/online_shopping_10_cats.zip",
]


def other_docs():
    """Every other document-like text in the shared corpora, source by source."""
    from tokenizer.shared_corpora import documents

    texts = documents(SHARED)
    for name in OTHER_FILES:
        for text in texts[name]:
            yield text.replace("#idiom#", "")


def load_text(mb: float) -> tuple[list[str], list[str]]:
    """(bench documents, >= mb MB of UTF-8), (held-out news documents)."""
    news = news_docs()
    held = news[-NEWS_HELD_OUT:]
    docs, size = [], 0
    for d in [*news[:-NEWS_HELD_OUT], *other_docs()]:
        if d and d.strip():
            docs.append(d)
            size += len(d.encode("utf-8"))
    base = list(docs)
    while size < mb * 1e6:  # repeat if the shared corpora are smaller than asked
        docs.extend(base)
        size += sum(len(d.encode("utf-8")) for d in base)
    return docs, held


def mb(texts: list[str]) -> float:
    return sum(len(t.encode("utf-8")) for t in texts) / 1e6


def timed(fn, texts) -> dict:
    t0 = time.perf_counter()
    n_tok = fn(texts)
    dt = time.perf_counter() - t0
    return {"mb": round(mb(texts), 3), "seconds": round(dt, 3), "mb_per_s": round(mb(texts) / dt, 3), "tokens": n_tok}


def build(docs: list[str], out: Path, vocab_size: int) -> dict:
    from tokenizer.build import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train").mkdir()
        with gzip.open(Path(tmp) / "train" / "shard-00000-of-00001.jsonl.gz", "wt", encoding="utf-8") as f:
            for i, d in enumerate(docs):
                f.write(json.dumps({"id": i, "text": d}, ensure_ascii=False) + "\n")
        return build_tokenizer(tmp, str(out), vocab_size=vocab_size, workers=os.cpu_count() or 1, stats=False)


def released_section(texts: list[str]) -> dict:
    """Released vocabularies: exact fast tokenizer (tokenizer.released) against the literal recipe,
    agreement and speed on the reference sample."""
    from tokenizer.agreement import released_agreement
    from tokenizer.loading import load_any_tokenizer
    from tokenizer.released import build_released_tokenizer
    from tokenizer.released_reference import reference_for

    out = {}
    for recipe, name in (("t5-pegasus", "t5_pegasus_vocab.txt"), ("wobert", "wobert_vocab.txt"), ("bert-chinese", "bert_chinese_vocab.txt")):
        vocab = SHARED / "vocab" / name
        if not vocab.exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            build_released_tokenizer(vocab, recipe, tmp)
            tok, ref = load_any_tokenizer(tmp), reference_for(recipe, vocab)
            a = released_agreement(tmp, recipe, vocab, texts, examples=5)
        out[recipe] = {
            "documents": a["documents"], "identical_documents": a["identical_documents"], "differences": a["differences"],
            "fast_batched": timed(lambda xs: sum(len(ids) for i in range(0, len(xs), 1024)
                                               for ids in tok(xs[i : i + 1024], add_special_tokens=False)["input_ids"]), texts),
            "literal_reference": timed(lambda xs: sum(len(ref.encode(x)) for x in xs), texts),
        }
        out[recipe]["speedup_vs_reference"] = round(out[recipe]["fast_batched"]["mb_per_s"] / out[recipe]["literal_reference"]["mb_per_s"], 2)
    return out


def spiece_section(docs: list[str], texts: list[str], vocab_size: int = 8000) -> dict:
    """A SentencePiece-only (mT5-shaped) folder: tokenizer.spiece against the sentencepiece library."""
    import sentencepiece as spm

    from tokenizer.loading import load_any_tokenizer
    from tokenizer.spiece import write_mt5_standin

    with tempfile.TemporaryDirectory() as tmp:
        write_mt5_standin(tmp, docs[::20], vocab_size)
        tok, sp = load_any_tokenizer(tmp), spm.SentencePieceProcessor(model_file=f"{tmp}/spiece.model")
    got = tok(texts, add_special_tokens=False)["input_ids"]
    return {
        "vocab_size": vocab_size, "documents": len(texts), "identical_documents": sum(a == b for a, b in zip(got, sp.encode(texts))),
        "fast_batched": timed(lambda xs: sum(len(ids) for i in range(0, len(xs), 1024)
                                           for ids in tok(xs[i : i + 1024], add_special_tokens=False)["input_ids"]), texts),
        "sentencepiece_library": timed(lambda xs: sum(len(ids) for ids in sp.encode(xs)), texts),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", help="existing tokenizer folder (default: build one from the bench text)")
    ap.add_argument("--vocab-size", type=int, default=50000)
    ap.add_argument("--mb", type=float, default=20.0, help="MB of text for the fast tokenizers")
    ap.add_argument("--ref-mb", type=float, default=2.0, help="MB for the (slow) Python references")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tokenizer.json"))
    args = ap.parse_args()

    from tokenizers import Regex, Tokenizer, normalizers
    from transformers import AutoTokenizer, BertTokenizerFast

    from tokenizer.agreement import agreement, bulk_vs_tokenizer_json
    from tokenizer.normalize import SPACE_BEFORE_ALNUM, SPACE_MARK
    from tokenizer.reference import JiebaWordPieceTokenizer
    from tokenizer.released import released_tokenizer
    from tokenizer.released_reference import Bert4kerasJieba

    docs, held = load_text(args.mb)
    result: dict = {"text_mb": round(mb(docs), 2), "documents": len(docs), "machine": {
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor() or platform.machine()}}
    tmp = None
    if args.tokenizer:
        folder = Path(args.tokenizer)
    else:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name) / "tok"
        t0 = time.perf_counter()
        s = build(docs, folder, args.vocab_size)
        result["build"] = {"seconds": round(time.perf_counter() - t0, 1), "vocab_size": s["vocab_size"],
                           "train_characters": s["train"]["characters"]}
    fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(folder))
    bert_vocab = SHARED / "vocab" / "bert_chinese_vocab.txt"
    bert = BertTokenizerFast(vocab=str(bert_vocab), do_lower_case=True)
    ref = JiebaWordPieceTokenizer.from_pretrained(folder, dictionary="jieba")

    ref_docs, size = [], 0
    step = max(1, int(len(docs) * args.ref_mb / max(result["text_mb"], 1e-9)))
    for start in range(step):  # every step-th document: a sample spread over all sources
        for d in docs[start::step]:
            ref_docs.append(d)
            size += len(d.encode("utf-8"))
            if size >= args.ref_mb * 1e6:
                break
        if size >= args.ref_mb * 1e6:
            break

    speed = {}
    from tokenizer.bulk import BulkEncoder

    bulk = BulkEncoder(folder)  # build_tokenizer wrote jieba_unigram.model; an older --tokenizer folder gets one now
    bulk_one = BulkEncoder(folder, num_threads=1)
    speed["ours_bulk_sentencepiece_batched"] = timed(
        lambda xs: sum(len(ids) for i in range(0, len(xs), 1024) for ids in bulk.encode_batch(xs[i : i + 1024])), docs)
    speed["ours_bulk_sentencepiece_one_thread"] = timed(
        lambda xs: sum(len(ids) for i in range(0, len(xs), 1024) for ids in bulk_one.encode_batch(xs[i : i + 1024])), docs)
    speed["ours_fast_single"] = timed(lambda xs: sum(len(fast.encode(x, add_special_tokens=False).ids) for x in xs), docs)
    speed["ours_fast_batched_no_offsets"] = timed(
        lambda xs: sum(len(e.ids) for i in range(0, len(xs), 1024) for e in fast.encode_batch_fast(xs[i : i + 1024], add_special_tokens=False)), docs)
    speed["ours_fast_batched"] = timed(
        lambda xs: sum(len(e.ids) for i in range(0, len(xs), 1024) for e in fast.encode_batch(xs[i : i + 1024], add_special_tokens=False)), docs)
    speed["ours_autotokenizer_batched"] = timed(
        lambda xs: sum(len(ids) for i in range(0, len(xs), 1024) for ids in hf(xs[i : i + 1024], add_special_tokens=False)["input_ids"]), docs)
    # The same tokenizer with plain NFKC (folds ，！？ to ,!?): what keeping Chinese punctuation costs.
    plain_nfkc = Tokenizer.from_str(fast.to_str())
    plain_nfkc.normalizer = normalizers.Sequence([
        normalizers.Replace(SPACE_MARK, " "), normalizers.NFKC(), normalizers.Lowercase(),
        normalizers.Replace(Regex(SPACE_BEFORE_ALNUM), SPACE_MARK)])
    speed["ours_fast_batched_plain_nfkc_normalizer"] = timed(
        lambda xs: sum(len(e.ids) for i in range(0, len(xs), 1024) for e in plain_nfkc.encode_batch(xs[i : i + 1024], add_special_tokens=False)), docs)
    speed["bert_chinese_chars_fast_single"] = timed(lambda xs: sum(len(bert.encode(x, add_special_tokens=False)) for x in xs), docs)
    speed["bert_chinese_chars_fast_batched"] = timed(
        lambda xs: sum(len(ids) for i in range(0, len(xs), 1024) for ids in bert(xs[i : i + 1024], add_special_tokens=False)["input_ids"]), docs)
    speed["reference_jieba_python"] = timed(lambda xs: sum(len(ref.encode(x)) for x in xs), ref_docs)
    t5_vocab = SHARED / "vocab" / "t5_pegasus_vocab.txt"
    if t5_vocab.exists():  # the released T5 PEGASUS recipe: exact fast tokenizer (tokenizer.released) vs the literal one
        t5 = released_tokenizer(str(t5_vocab), "t5-pegasus")
        t5_literal = Bert4kerasJieba(t5_vocab)
        speed["t5_pegasus_exact_autotokenizer_batched"] = timed(
            lambda xs: sum(len(ids) for i in range(0, len(xs), 1024) for ids in t5(xs[i : i + 1024], add_special_tokens=False)["input_ids"]), ref_docs)
        speed["t5_pegasus_exact_single"] = timed(lambda xs: sum(len(t5(x, add_special_tokens=False)["input_ids"]) for x in xs), ref_docs)
        speed["t5_pegasus_literal_bert4keras_python"] = timed(lambda xs: sum(len(t5_literal.encode(x)) for x in xs), ref_docs)
    result["threads"] = {"rayon": os.environ.get("RAYON_NUM_THREADS", "all cores"), "note": "single = one encode() call per document"}
    base = speed["reference_jieba_python"]["mb_per_s"]
    for v in speed.values():
        v["speedup_vs_reference"] = round(v["mb_per_s"] / base, 1)
    result["speed"] = speed
    result["keep_cjk_punctuation_normalizer_cost"] = {
        "batched_time_ratio_vs_plain_nfkc": round(
            speed["ours_fast_batched"]["seconds"] / speed["ours_fast_batched_plain_nfkc_normalizer"]["seconds"], 3),
        "note": "one charsmap pass + NFC keep ，！？；：（）…～ (tokenizer.charsmap) instead of plain NFKC",
    }
    result["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)

    def cpt(tok_lists_len: int, texts: list[str]) -> float:
        return round(sum(len("".join(t.split())) for t in texts) / tok_lists_len, 4)

    cpt_news = {
        "ours": cpt(sum(len(e.ids) for e in fast.encode_batch(held, add_special_tokens=False)), held),
        "bert_chinese_chars": cpt(sum(len(ids) for ids in bert(held, add_special_tokens=False)["input_ids"]), held),
    }
    if t5_vocab.exists():
        cpt_news["t5_pegasus"] = cpt(sum(len(ids) for ids in t5(held, add_special_tokens=False)["input_ids"]), held)
    result["chars_per_token_news_held_out"] = cpt_news
    result["agreement_news_held_out"] = {
        d: {k: v for k, v in agreement(folder, held, dictionary=d).items() if k != "examples"} for d in ("vocab", "jieba")
    }
    result["agreement_news_held_out"]["vocab_bulk_engine"] = {
        k: v for k, v in agreement(folder, held, engine="bulk").items() if k != "examples"}
    # The bulk (SentencePiece, float32) ids against tokenizer.json's (float64) on every bench document.
    result["bulk_vs_tokenizer_json"] = bulk_vs_tokenizer_json(folder, docs)
    result["released"] = released_section(ref_docs)
    result["spiece"] = spiece_section(docs, ref_docs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=2))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
