"""Quality score: character n-gram perplexity, CCNet buckets, fit CLI."""
import json
import math

import numpy as np
import pytest

from pipeline import quality

REF = ["今天天气很好，我们去公园散步。", "公园里有很多人在散步，天气很好。", "我们今天去图书馆看书，天气很好。"] * 20


def test_probabilities_are_normalized():
    m = quality.fit(REF, order=3)
    chars = sorted(set("".join(REF)))
    for ctx in ("天气", "我们", "去公", "看不"):
        probs = [math.exp(m.char_logprobs(ctx + c)[-1]) for c in chars]
        unk = math.exp(m.char_logprobs(ctx + "龘")[-1])
        assert 0.97 < sum(probs) <= 1.0 + 1e-4, (ctx, sum(probs))
        assert 0 < unk < min(probs)


def test_fluent_text_scores_lower_and_batches_agree():
    m = quality.fit(REF, order=3)
    fluent, shuffled = "我们今天去公园散步，天气很好。", "好很气天，步散园公去天今们我。"
    assert m.perplexity(fluent) < m.perplexity(shuffled) / 5
    single = [m.perplexity(t) for t in (fluent, shuffled, "书")]
    assert np.allclose(m.perplexities([fluent, shuffled, "书"]), single)
    assert m.perplexities(["", fluent, ""])[::2] == [float("inf")] * 2
    m.cutoffs = (10.0, 100.0)
    assert [m.bucket(p) for p in (5, 50, 500)] == ["head", "middle", "tail"]


def test_save_load_and_scorer(tmp_path):
    m = quality.calibrate(quality.fit(REF, order=3), REF[:3] + ["随便写的一些字"])
    path = str(tmp_path / "q.npz")
    m.save(path)
    scorer = quality.QualityScorer({"model": path, "max_perplexity": 50.0})
    (ppl, bucket, reason), (ppl2, _, reason2) = scorer.batch(["我们今天去公园散步。", "龘靐齉爩鱻麤"])
    assert ppl == pytest.approx(m.perplexity("我们今天去公园散步。"), abs=0.01) and bucket == m.bucket(ppl) and reason is None
    assert ppl2 > 50 and reason2 == "high_perplexity"
    assert quality.QualityScorer({}).batch(["x"])[0][2] is None
    hist = quality.histogram([10, 20, 30, 1e7])
    s = quality.summarize(hist, {"head": 1})
    assert s["documents"] == 4 and 5 < s["ppl_p10"] < 15 and s["buckets"] == {"head": 1}


def test_reference_ranks_real_text(tmp_path, shared_data):
    """Fitted on Wikipedia: held-out Wikipedia < news < Weibo posts, by median perplexity."""
    import csv
    wiki = [json.loads(line)["text"] for line in (shared_data / "corpus/zhwiki_sample/wiki_00_a.jsonl").open(encoding="utf-8")]
    m = quality.fit(wiki[:50], order=3)
    news = [line.split("\t", 1)[1] for line in
            (shared_data / "corpus/thucnews_cnews_subset/cnews.val.txt").open(encoding="utf-8")][:100]
    with (shared_data / "corpus/weibo_senti_subset/weibo_senti_100k_subset.csv").open(encoding="utf-8") as f:
        weibo = [r["review"] for r in csv.DictReader(f)][:200]
    med = [np.median(m.perplexities(t)) for t in (wiki[50:], news, weibo)]
    assert med[0] < med[1] < med[2], med


def test_bottom_up_scores_equal_the_arpa_reference(shared_data):
    """The pipeline's scorer (merged tables, bottom up) gives the very floats of the plain ARPA
    back-off (``score_lazy``), on real text, short texts, empty ones and texts holding the
    start marker (which take the reference path)."""
    from pipeline.charhash import span_hashes

    wiki = shared_data / "corpus/zhwiki_sample/wiki_00_a.jsonl"
    texts = [json.loads(line)["text"] for line in wiki.open(encoding="utf-8")][:400]
    m = quality.fit(texts[::2], order=4)
    batch = texts[1::2] + ["", "a", "的", "今天天气很好", "x\x02\x02y"]
    for part in (batch[:-1], batch):
        prefix, pos, lengths = quality._positions(part, m.order)
        ref = m.score_lazy(m.order, pos.size, lambda k, idx: span_hashes(prefix, pos[idx] - k + 1, k),
                           lambda k, idx: span_hashes(prefix, pos[idx] - k + 1, k - 1))
        got, _ = m._score_texts(part)
        assert got.dtype == ref.dtype and np.array_equal(got, ref)


def test_hash_table_finds_every_key_and_no_other():
    """Linear probing laid out in one pass, against a dict: tables from 1 key to full load, the
    key 0, and clusters aimed at the table's last slots, which wrap to the front."""
    import numpy as np

    from pipeline.charhash import HashTable

    rng = np.random.default_rng(0)
    pool = np.unique(rng.integers(1, 2**64, 1 << 17, dtype=np.uint64, endpoint=False))
    for n in (1, 2, 7, 8, 100, 5000):
        bits = max(4, int(np.ceil(np.log2(n * 2 + 1))))
        at_end = pool[(pool * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits) >= (1 << bits) - 3]
        wraps = at_end.size >= n          # enough keys aimed at the last 3 slots for this size
        cases = [pool[:n], np.r_[np.uint64(0), pool[: n - 1]]] + ([at_end[:n]] if wraps else [])
        for keys in cases:
            vals = rng.integers(1, 1000, keys.size).astype(np.int32)
            table = HashTable(keys, vals)
            assert table.bits == bits and np.count_nonzero(table.keys) == n
            probe = np.r_[keys, rng.integers(1, 2**63, 300, dtype=np.uint64)]
            found, got = table.lookup(probe)
            want = dict(zip(np.where(keys == 0, 1, keys).tolist(), vals.tolist()))
            assert found.tolist() == [max(k, 1) in want for k in probe.tolist()]
            assert got.tolist() == [want.get(max(k, 1), 0) for k in probe.tolist()]
            if wraps and keys is cases[-1] and n > 3:
                assert table.keys[: n - 3].all()       # the cluster wrapped to the front
