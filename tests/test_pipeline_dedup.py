"""Exact and near-duplicate detection: MinHash quality and cluster resolution."""

import json
import os
import random
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from pipeline import dedup

SHARED = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))
CNEWS = SHARED / "corpus/thucnews_cnews_subset/cnews.val.txt"
CFG = {"ngram": 5, "num_perm": 128, "bands": 16, "threshold": 0.8, "seed": 42}

WRITTEN = [
    "清明前后，青溪镇的茶园迎来了一年中最忙碌的采摘季。全镇茶园面积约一万二千亩，茶农们天不亮就上山采茶，今年春茶品质明显好于往年，收购价格也比去年略有上涨。",
    "端午节当天，石湾镇第十二届龙舟赛在镇东的石湾河上举行，十六支龙舟队同场竞技，吸引了上万名群众沿河观看。比赛分为男子组和女子组，最终东村队夺得男子组冠军。",
    "火山是地下深处的岩浆冲出地表后形成的山体或地貌。地球内部温度很高，部分岩石熔化形成岩浆，岩浆沿着地壳的裂缝上升，在压力足够大时喷出地面，形成火山喷发。",
    "星禾科技昨日发布了新一代植保无人机，这款无人机主要用于农田喷洒和作物巡检，载药量达到四十升，一次充电可以连续作业二十五分钟，每小时能够完成八十亩农田的喷洒。",
]


def signature(text):
    a, b = dedup.minhash_params(CFG["num_perm"], CFG["seed"])
    return dedup.minhash_signature(dedup.shingle_hashes(text, CFG["ngram"]), a, b)


def edit(text, rng, n_edits):
    """A near copy: a few character substitutions/deletions/insertions plus
    re-punctuation, like a re-posted article."""
    chars = list(text)
    for _ in range(n_edits):
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.4:
            chars[i] = rng.choice("的了是在有和我们他")
        elif op < 0.7:
            del chars[i]
        else:
            chars.insert(i, rng.choice("嗯啊呢吧"))
    out = "".join(chars).replace("，", ",", 1)
    return out + rng.choice(["", "（完）", "【来源：网络】"])


def is_candidate(sig_a, sig_b, bands):
    ka, kb = dedup.band_keys(sig_a, bands), dedup.band_keys(sig_b, bands)
    return any(x == y for x, y in zip(ka, kb))


def test_exact_key_ignores_case_and_whitespace():
    assert dedup.exact_key("Hello 世界\n你好") == dedup.exact_key("hello世界 你好 ")
    assert dedup.exact_key("你好世界") != dedup.exact_key("你好世界！")


def test_minhash_estimates_jaccard():
    rng = random.Random(0)
    for text in WRITTEN:
        near = edit(text, rng, 3)
        est = dedup.estimated_jaccard(signature(text).tobytes(), signature(near).tobytes())
        true = dedup.true_jaccard(text, near)
        assert abs(est - true) < 0.15, (est, true)
    # unrelated documents share (almost) nothing
    for x, y in combinations(WRITTEN, 2):
        assert dedup.estimated_jaccard(signature(x).tobytes(), signature(y).tobytes()) < 0.2
    # deterministic and dtype/shape as documented
    s = signature(WRITTEN[0])
    assert s.dtype == np.uint32 and s.shape == (128,)
    assert np.array_equal(s, signature(WRITTEN[0]))


def test_short_text_signature():
    assert signature("好").shape == (128,)
    assert signature("").shape == (128,)


def test_batch_signatures_equal_one_text_signatures():
    """The batch path (one encode, a code-point table, grouped windows) gives each text's own
    signature: long and short texts, punctuation only, case folding that changes length."""
    a, b = dedup.minhash_params(CFG["num_perm"], CFG["seed"])
    texts = WRITTEN + ["", "好", "，。！", "İSTANBUL 2024", "ab_cd", "短文"] + [d[:7] for d in WRITTEN] + [d * 12 for d in WRITTEN[:2]]
    batch = dedup.minhash_signatures(texts, CFG["ngram"], a, b)
    assert np.array_equal(batch, np.stack([signature(t) for t in texts]))
    assert np.array_equal(dedup.minhash_signatures(texts, CFG["ngram"], a, b, max_windows=64), batch)
    assert np.array_equal(dedup.minhash_signatures(texts, CFG["ngram"], a, b, max_windows=7), batch)
    assert dedup.minhash_signatures([], CFG["ngram"], a, b).shape == (0, CFG["num_perm"])


def test_candidate_pairs_single_member_buckets():
    words = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.uint64)
    assert dedup.candidate_pairs(np.array([7, 8, 9], dtype=np.uint64), words).shape == (0, 4)
    got = dedup.candidate_pairs(np.array([7, 8, 7], dtype=np.uint64), words)
    assert got.tolist() == [[1, 2, 5, 6]]


def reference_pairs(ids, keys, max_bucket_size):
    """Candidate pairs the slow, obvious way: per bucket, all pairs of its
    distinct keys, or a star around the smallest when it is too large."""
    buckets = defaultdict(set)
    for bucket, key in zip(ids, keys):
        buckets[bucket].add(key)
    pairs = set()
    for members in buckets.values():
        members = sorted(members)
        if len(members) <= max_bucket_size:
            pairs.update(combinations(members, 2))
        else:
            pairs.update((members[0], other) for other in members[1:])
    return sorted(a + b for a, b in pairs)


def test_candidate_pairs_match_reference():
    rng = np.random.default_rng(0)
    keys = [(int(h), int(l)) for h, l in rng.integers(0, 2**63, size=(60, 2), dtype=np.uint64)]
    ids, owners = [], []
    for _ in range(400):  # few bucket ids: buckets of every size, repeated entries
        ids.append(int(rng.integers(0, 40)))
        owners.append(keys[int(rng.integers(0, len(keys)))])
    ids += [99] * 30  # one bucket larger than the limit below
    owners += keys[:30]
    for limit in (100, 12):
        got = dedup.candidate_pairs(np.array(ids, dtype=np.uint64), np.array(owners, dtype=np.uint64), limit)
        assert [tuple(r) for r in got.tolist()] == reference_pairs(ids, owners, limit)
    assert dedup.candidate_pairs(np.array([5], dtype=np.uint64), np.array([keys[0]], dtype=np.uint64)).shape == (0, 4)


def test_drop_rule_keeps_the_top_of_every_edge_and_differs_from_components_only_on_chains():
    node = lambda chars, doc_id: ((-chars, doc_id, "k" + doc_id), "k" + doc_id, doc_id)
    a, b, c = node(12, "a"), node(10, "b"), node(11, "c")      # rank: a > c > b
    # a-b and b-c (a chain through the lowest-ranked b): b goes, c stays (near no higher document)
    edges = [(b, c), (a, b)]
    kept, dropped = dedup.survivors([("ka", "a", "s", 1), ("kb", "b", "s", 2), ("kc", "c", "s", 3)],
                                    dedup.drop_candidates(edges))
    assert dropped == [("kb", "b", "a")]
    assert [k[0] for k in kept] == ["ka", "kc"]
    # a-c and c-b: c is dropped for a, b for c (its highest-ranked neighbour), in any edge order
    for order in ([(a, c), (c, b)], [(b, c), (c, a)]):
        assert dedup.survivors([], dedup.drop_candidates(order))[1] == [("kb", "b", "c"), ("kc", "c", "a")]
    # a document near two higher ones names the highest
    assert dedup.best_keepers(dedup.drop_candidates([(b, c), (b, a)])) == {"kb": ("b", "a")}
    assert dedup.survivors([], []) == ([], [])


def _real_documents(n):
    if not CNEWS.exists():
        pytest.skip("shared THUCNews data not available")
    docs = []
    with open(CNEWS, encoding="utf-8") as f:
        for line in f:
            text = line.split("\t", 1)[1].strip()
            if 200 <= len(text) <= 1500 and dedup.true_jaccard(text[: len(text) // 2], text[len(text) // 2 :]) < 0.5:
                docs.append(text)
            if len(docs) == n:
                break
    return docs


def test_near_duplicate_recall_and_precision_on_real_documents():
    """Edited copies of real news articles are found (recall >= 0.9) and no
    two distinct articles are merged."""
    docs = _real_documents(120)
    rng = random.Random(1)
    sigs = [signature(d) for d in docs]
    found = 0
    total = 0
    for d, s in zip(docs, sigs):
        copy = edit(d, rng, max(1, len(d) // 200))
        if dedup.true_jaccard(d, copy) < CFG["threshold"]:
            continue
        total += 1
        sc = signature(copy)
        if is_candidate(s, sc, CFG["bands"]) and dedup.estimated_jaccard(s.tobytes(), sc.tobytes()) >= CFG["threshold"]:
            found += 1
    assert total >= 100
    assert found / total >= 0.9, (found, total)
    merged = 0
    for (i, a), (j, b) in combinations(list(enumerate(sigs)), 2):
        if is_candidate(a, b, CFG["bands"]) and dedup.estimated_jaccard(a.tobytes(), b.tobytes()) >= CFG["threshold"]:
            if dedup.true_jaccard(docs[i], docs[j]) < 0.5:
                merged += 1
    assert merged == 0


def test_key_words_keep_trailing_zero_bytes_and_order():
    keys = ["ab" * 15 + "00", "cd" * 14 + "0000", "00" * 8 + "ef" * 8, "ff" * 16]
    words = dedup.key_words(keys)
    assert [dedup.hex_key(hi, lo) for hi, lo in words.tolist()] == keys
    assert sorted(keys) == [keys[i] for i in np.lexsort((words[:, 1], words[:, 0]))]
    assert dedup.word_partitions(words, 7).tolist() == [dedup.partition_of(k, 7) for k in keys]


def _near_copies(n_docs):
    docs = _real_documents(n_docs)
    rng = random.Random(2)
    batch = []
    for i, text in enumerate(docs):
        batch.append((dedup.exact_key(text), (f"d{i:03d}", text, "news", i)))
        for j in range(i % 3):  # 0-2 edited copies of each article
            copy = edit(text, rng, max(1, len(text) // 300))
            batch.append((dedup.exact_key(copy), (f"d{i:03d}-{j}", copy, "copies", i)))
    return sorted(dict(batch).items())


@pytest.mark.slow     # 1-2 s: a Beam run (the fast tier stays under a minute)
def test_beam_near_duplicates_equal_the_functions_in_one_process():
    """Partitioned Beam joins drop exactly the documents that the same
    functions drop on the whole set at once (as in the benchmark's plain loop)."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from pipeline.events import Select

    cfg = {**CFG, "max_bucket_size": 100, "keep": "longest"}
    batch = _near_copies(60)
    sigs, (ids, owners), words = dedup.MinHasher(cfg)(batch)
    lookup = dedup.SigLookup([dedup.sig_table(words, sigs, [d[0] for _, d in batch], [len(d[1]) for _, d in batch])])
    pairs = dedup.candidate_pairs(ids, owners)
    edges = dedup.verify_halves([dedup.attach_end(pairs, end, lookup) for end in (0, 1)], cfg["threshold"], cfg["keep"])
    items = [(key, doc[0], doc[2], doc[3]) for key, doc in batch]
    kept, expected = dedup.survivors(items, dedup.drop_candidates(edges))
    id_of = {key: doc[0] for key, doc in batch}
    assert len(expected) >= 0.9 * sum(i % 3 for i in range(60))  # edited copies are found...
    assert all(doc_id[:4] == kept_id[:4] for _, doc_id, kept_id in expected)  # ...and only those
    assert all(id_of[key] == doc_id for key, doc_id, _ in expected)
    with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"])) as p:
        batches = p | beam.Create([batch[i : i + 25] for i in range(0, len(batch), 25)])
        candidates = batches | dedup.NearDuplicates(cfg, partitions=4)
        joined = {"docs": batches, "candidates": candidates} | dedup.Survivors(partitions=4)
        dropped = joined | "Dropped" >> Select(dedup.DROPPED) | beam.FlatMap(lambda d: d)
        survivors = joined | "Kept" >> Select(dedup.SURVIVORS) | "FlatKept" >> beam.FlatMap(lambda d: d)
        assert_that(dropped, equal_to(expected), label="dropped")
        assert_that(survivors, equal_to(kept), label="kept")
