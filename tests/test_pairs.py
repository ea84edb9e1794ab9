"""LCS exactness, greedy pseudo-summary selection, make_pair, and an end-to-end
Beam run on a tiny corpus written here (accounting identity, determinism)."""

import gzip
import hashlib
import itertools
import json
import os
import random
from pathlib import Path

import pytest

from pipeline.lcs import char_masks, lcs_length, lcs_length_dp, lcs_length_numpy, lcs_with_masks
from pipeline.pairs import (
    PairConfig,
    Rejected,
    build_pairs,
    document_sentences,
    exhaustive_pseudo_summary,
    make_pair,
    pseudo_summary,
    rouge_l_f1,
    summary_size,
)
from pipeline.sentences import split_sentences

SHARED = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))

# Sentences written for these tests.
SENTENCES = [
    "春天来了，公园里的花都开了。",
    "小明每天早上都去跑步。",
    "这家饭店的菜又便宜又好吃！",
    "你知道明天的会议在哪里开吗？",
    "图书馆周末也开放，很多学生去那里看书。",
    "天气预报说下午可能会下雨。",
    "我们打算下个月去北京旅游。",
    "他的中文说得越来越好了。",
    "妈妈在厨房里做晚饭；爸爸在看报纸。",
    "这个问题其实并不难……只是需要耐心。",
    "老师说：“明天交作业。”",
    "城市的交通越来越方便了。",
]


# ---------------------------------------------------------------- LCS


def test_lcs_matches_dp_on_random_strings():
    rnd = random.Random(7)
    for _ in range(400):
        alphabet = rnd.choice(["ab", "abcd", "春夏秋冬。", "的一是了我不人在他有"])
        a = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 70)))
        b = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 70)))
        expected = lcs_length_dp(a, b)
        assert lcs_length(a, b) == expected == lcs_length(b, a)
        assert lcs_length_numpy(a, b) == expected


def test_lcs_with_masks_equals_deleting_disallowed_positions():
    rnd = random.Random(8)
    for _ in range(300):
        a = "".join(rnd.choice("abc甲乙") for _ in range(rnd.randint(1, 60)))
        b = "".join(rnd.choice("abc甲乙") for _ in range(rnd.randint(0, 40)))
        allowed = rnd.getrandbits(len(a))
        kept = "".join(ch for i, ch in enumerate(a) if allowed >> i & 1)
        assert lcs_with_masks(char_masks(a), len(a), b, allowed) == lcs_length_dp(kept, b)


def test_lcs_long_strings():
    rnd = random.Random(9)
    a = "".join(rnd.choice("的一是了我不人在他有这个上们来") for _ in range(600))
    b = "".join(rnd.choice("的一是了我不人在他有这个上们来") for _ in range(300))
    assert lcs_length(a, b) == lcs_length_numpy(a, b) == lcs_length_dp(a, b)


# ---------------------------------------------------------------- selection


def test_summary_size_rounds_half_up_and_keeps_a_source():
    assert [summary_size(n) for n in (1, 2, 3, 4, 5, 6, 10, 12)] == [1, 1, 1, 1, 1, 2, 3, 3]
    assert summary_size(4, ratio=0.9) == 3


def test_greedy_picks_the_obvious_summary_sentence():
    sentences = ["苹果很甜。", "香蕉很长。", "西瓜很大。", "苹果香蕉西瓜都很好吃。", "今天下雨。"]
    chosen, score = pseudo_summary(sentences)
    assert chosen == [3]
    assert (chosen, score) == exhaustive_pseudo_summary(sentences)


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_ratio_respected(ratio):
    for n in range(1, len(SENTENCES) + 1):
        chosen, _ = pseudo_summary(SENTENCES[:n], ratio=ratio)
        assert len(chosen) == summary_size(n, ratio) == len(set(chosen))
        assert chosen == sorted(chosen) and all(0 <= i < n for i in chosen)


def test_score_is_rouge_l_f1_of_summary_vs_rest():
    rnd = random.Random(3)
    for _ in range(20):
        sentences = rnd.sample(SENTENCES, rnd.randint(4, 9))
        for chosen, score in (pseudo_summary(sentences), exhaustive_pseudo_summary(sentences)):
            summary = "".join(sentences[i] for i in chosen)
            rest = "".join(s for i, s in enumerate(sentences) if i not in chosen)
            assert score == pytest.approx(rouge_l_f1(lcs_length_dp(summary, rest), len(summary), len(rest)))


def test_exhaustive_is_optimal_and_never_beaten_by_greedy():
    rnd = random.Random(4)
    for _ in range(15):
        sentences = rnd.sample(SENTENCES, rnd.randint(4, 8))
        k = summary_size(len(sentences))
        _, best = exhaustive_pseudo_summary(sentences)
        _, greedy = pseudo_summary(sentences)
        assert greedy <= best + 1e-12
        # brute force with the reference DP, independent of the bit masks
        brute = max(
            rouge_l_f1(
                lcs_length_dp("".join(sentences[i] for i in c), "".join(s for i, s in enumerate(sentences) if i not in c)),
                sum(len(sentences[i]) for i in c),
                sum(len(s) for i, s in enumerate(sentences) if i not in c),
            )
            for c in itertools.combinations(range(len(sentences)), k)
        )
        assert best == pytest.approx(brute)


# ---------------------------------------------------------------- make_pair


def test_make_pair_partitions_sentences():
    text = "".join(SENTENCES[:8]) + "\n" + "".join(SENTENCES[8:])
    pair = make_pair({"id": "d1", "text": text}, max_source_chars=10_000, max_target_chars=10_000)
    sentences = split_sentences(text)
    chosen, _ = pseudo_summary(sentences)
    assert pair["id"] == "d1"
    assert pair["target"] == "".join(sentences[i] for i in chosen)
    assert pair["source"] == "".join(s for i, s in enumerate(sentences) if i not in chosen)
    assert sorted(pair["source"] + pair["target"]) == sorted(text.replace("\n", ""))


def test_make_pair_truncates_and_windows():
    text = "".join(SENTENCES)
    pair = make_pair({"id": 1, "text": text}, max_source_chars=30, max_target_chars=12, max_doc_chars=0)
    assert len(pair["source"]) == 30 and len(pair["target"]) == 12
    # Default budget = source + target maximum: only the leading sentences that fit are used.
    assert make_pair({"id": 1, "text": text}, max_source_chars=30, max_target_chars=12) == Rejected(1, "too_few_sentences")
    windowed = make_pair({"id": 1, "text": text}, max_doc_chars=60)
    assert 0 < len(windowed["source"]) + len(windowed["target"]) <= 60


def test_document_sentences_keeps_leading_sentences_within_budget():
    text = "".join(SENTENCES)
    assert document_sentences(text, PairConfig(max_doc_chars=0)) == split_sentences(text)
    assert document_sentences(text, PairConfig(max_doc_chars=30)) == SENTENCES[:2]  # 14 + 11 chars
    assert document_sentences(text, PairConfig(max_doc_chars=5)) == SENTENCES[:1]  # never empty


def test_make_pair_rejects():
    assert make_pair({"id": "x", "text": "".join(SENTENCES[:3])}) == Rejected("x", "too_few_sentences")
    assert make_pair({"id": "y", "text": ""}) == Rejected("y", "too_few_sentences")
    assert make_pair({"id": "z"}) == Rejected("z", "no_text")
    assert isinstance(make_pair({"id": "w", "text": "".join(SENTENCES[:3])}, min_sentences=3), dict)


def test_config_validation():
    with pytest.raises(ValueError):
        PairConfig(ratio=0.0)
    with pytest.raises(TypeError):
        make_pair({"id": 1, "text": "你好。"}, no_such_option=1)


@pytest.mark.skipif(not (SHARED / "corpus/thucnews_cnews_subset/cnews.val.txt").exists(), reason="shared data absent")
def test_real_news_documents():
    path = SHARED / "corpus/thucnews_cnews_subset/cnews.val.txt"
    with open(path, encoding="utf-8") as f:
        articles = [next(f).split("\t", 1)[1] for _ in range(20)]
    for i, text in enumerate(articles):
        pair = make_pair({"id": i, "text": text})
        if isinstance(pair, Rejected):
            assert pair.reason == "too_few_sentences"
            continue
        assert pair["source"] and pair["target"]
        assert len(pair["source"]) <= 1024 and len(pair["target"]) <= 256


# ---------------------------------------------------------------- end to end


def _write_corpus(root: Path) -> dict:
    """A tiny cleaned corpus: two train shards, one valid shard, known rejects."""
    rnd = random.Random(42)

    def doc(i, n):
        paragraphs = ["".join(rnd.sample(SENTENCES, n // 2)), "".join(rnd.sample(SENTENCES, n - n // 2))]
        return {"id": f"doc-{i:03d}", "text": "\n".join(paragraphs)}

    layout = {
        "train/shard-00000-of-00002.jsonl.gz": [doc(i, rnd.randint(4, 12)) for i in range(9, -1, -1)],
        "train/shard-00001-of-00002.jsonl.gz": [doc(10, 2), doc(11, 8), doc(12, 3)],  # 2 too short
        "valid/shard-00000-of-00001.jsonl.gz": [doc(20, 6), {"id": "doc-021"}, doc(22, 9)],  # 1 no text
    }
    shards = []
    for rel, docs in layout.items():
        lines = [json.dumps(d, ensure_ascii=False) for d in docs]
        if rel.startswith("valid"):
            lines.append("{not json")
        data = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        shards.append({"path": rel, "split": rel.split("/")[0], "documents": len(docs), "characters": 0,
                       "sha256": hashlib.sha256(data).hexdigest()})
    (root / "manifest.json").write_text(json.dumps({"shards": shards}))
    return layout


def _read_shard(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


@pytest.mark.slow     # 2 s: an end-to-end build (the fast tier stays under a minute)
def test_build_pairs_end_to_end(tmp_path):
    _write_corpus(tmp_path / "clean")
    out = tmp_path / "pairs"
    stats = build_pairs(str(tmp_path / "clean"), str(out))

    assert stats["read"] == 17
    assert stats["rejected"] == {"too_few_sentences": 2, "no_text": 1, "bad_json": 1}
    assert stats["written"] == 13
    assert stats["read"] == stats["written"] + sum(stats["rejected"].values())

    manifest = json.loads((out / "manifest.json").read_text())
    paths = [s["path"] for s in manifest["shards"]]
    assert paths == [
        "train/shard-00000-of-00002.jsonl.gz",
        "train/shard-00001-of-00002.jsonl.gz",
        "valid/shard-00000-of-00001.jsonl.gz",
    ]
    total = 0
    for shard in manifest["shards"]:
        data = (out / shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        pairs = _read_shard(out / shard["path"])
        total += len(pairs)
        assert len(pairs) == shard["documents"]
        assert shard["characters"] == sum(len(p["source"]) + len(p["target"]) for p in pairs)
        assert [p["id"] for p in pairs] == sorted(p["id"] for p in pairs)
        assert all(set(p) == {"id", "text", "source", "target"} and p["source"] and p["target"] for p in pairs)
        ids = {p["id"] for p in pairs}
        assert (ids <= {"doc-020", "doc-022"}) == (shard["split"] == "valid")
    assert total == stats["written"]

    # Rerun: byte-identical output (gzip mtime=0, sorted shards, sorted JSON).
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    build_pairs(str(tmp_path / "clean"), str(out))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before == after
