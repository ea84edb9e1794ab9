"""End-to-end runs of the Beam pipeline (DirectRunner, in-process)."""

import gzip
import hashlib
import json
import random

import pytest

from pipeline.run import main, run_pipeline

SUBJECTS = ["青溪镇的茶农", "临江市交通局", "南屏市图书馆", "石湾河边的居民", "星禾科技的工程师", "一位退休教师",
            "市第一中学的学生", "老秦家面馆的老板", "山区小学的校长", "社区志愿者服务队", "博物馆讲解员", "动物园饲养员"]
VERBS = ["今年春天决定", "在周末组织大家", "经过反复讨论后开始", "第一次尝试", "连续三年坚持", "在专家指导下学会了",
         "向市民公开征集意见后", "利用假期时间", "克服了很多困难", "在媒体报道后继续"]
OBJECTS = ["修缮村口的老石桥", "整理上千册旧书", "种植耐旱的果树", "记录候鸟迁徙的路线", "开设免费的书法课",
           "改造废弃的厂房", "制作当地方言词典", "清理河道里的垃圾", "培育新的水稻品种", "拍摄非遗手艺纪录片",
           "建设社区小花园", "维护山间的步行道"]
TAILS = ["大家都说效果很好。", "附近的居民纷纷点赞。", "这件事还上了本地新闻。", "参与的人越来越多了。",
         "明年还打算继续做下去。", "不少年轻人也加入进来。"]


LINKS = ["前后用了{}天", "一共花了{}个小时", "请来{}位帮手", "先后开了{}次会", "自己出了{}元钱"]


def make_doc(rng, n_sentences=4):
    parts = []
    subjects, objects, tails = rng.sample(SUBJECTS, n_sentences), rng.sample(OBJECTS, n_sentences), rng.sample(TAILS, n_sentences)
    for i in range(n_sentences):
        link = rng.choice(LINKS).format(rng.randint(2, 99))
        parts.append(f"{subjects[i]}{rng.choice(VERBS)}{objects[i]}，{link}，{tails[i]}")
    return "".join(parts)


def write_corpus(root, n_docs=40, seed=0):
    """JSONL + plain text + malformed input; returns the expected reject counts."""
    rng = random.Random(seed)
    docs = [make_doc(rng) for _ in range(n_docs)]
    lines = [json.dumps({"id": f"d{i:03d}", "text": t}, ensure_ascii=False).encode() for i, t in enumerate(docs)]
    # planted noise
    lines.append(json.dumps({"id": "html", "text": "<p>ＨＴＭＬ&amp;全角\u200b" + docs[0][:30] + "</p>见http://t.cn/abc" + make_doc(rng)}, ensure_ascii=False).encode())
    lines.append(json.dumps({"id": "dup-exact", "text": docs[1] + "  "}, ensure_ascii=False).encode())
    near = docs[2][:40] + "的" + docs[2][41:] + "（完）"
    lines.append(json.dumps({"id": "dup-near", "text": near}, ensure_ascii=False).encode())
    lines.append(json.dumps({"id": "short", "text": "好评！"}, ensure_ascii=False).encode())
    lines.append(json.dumps({"id": "english", "text": "This is an English paragraph about nothing in particular at all."}).encode())
    lines.append(b'{"id": "broken", "text": "unterminated')
    lines.append(b'{"id": "bad-utf8", "text": "\xff\xfe\xfd"}')
    lines.append(b'{"id": "no-text", "title": "x"}')
    lines.append(b"\x00\x01\x02\x03binary junk")
    (root / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # plain text, one document per line, no ids
    (root / "b.txt").write_text(make_doc(rng) + "\n" + make_doc(rng) + "\n", encoding="utf-8")
    (root / "empty.jsonl").write_bytes(b"")
    return {
        "read": n_docs + 9 + 2 + 1,
        "rejected": {"too_short": 1, "low_chinese_ratio": 1, "broken_json": 1, "invalid_utf8": 1,
                     "missing_text": 1, "binary_data": 1, "empty_file": 1},
        "duplicates_exact": 1,
        "duplicates_near": 1,
    }


def read_shards(out, manifest):
    docs = {}
    for entry in manifest["shards"]:
        raw = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
        assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime = 0
        rows = [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines()]
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
        assert len(rows) == entry["documents"]
        assert sum(len(r["text"]) for r in rows) == entry["characters"]
        for r in rows:
            assert set(r) == {"id", "text", "source", "lang", "lang_score"}   # + what the checks record
            assert r["source"].endswith((".jsonl", ".txt"))
            docs[r["id"]] = (entry["split"], r["text"])
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    expected = write_corpus(root)
    return root, expected


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    root, _ = corpus
    out = tmp_path_factory.mktemp("out1")
    stats = run_pipeline([str(root / "*.jsonl"), str(root / "b.txt")], str(out))
    return out, stats


def test_accounting_identity_and_rejects(corpus, first_run):
    _, expected = corpus
    out, stats = first_run
    on_disk = json.loads((out / "stats.json").read_text())
    for key in ("read", "written", "rejected", "duplicates_exact", "duplicates_near"):
        assert on_disk[key] == stats[key]
    assert stats["read"] == stats["written"] + sum(stats["rejected"].values()) + stats["duplicates_exact"] + stats["duplicates_near"]
    assert stats["read"] == expected["read"]
    assert stats["rejected"] == expected["rejected"]
    assert stats["duplicates_exact"] == expected["duplicates_exact"]
    assert stats["duplicates_near"] == expected["duplicates_near"]
    rejects = {}
    for path in (out / "rejects").glob("*.jsonl.gz"):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            r = json.loads(line)
            rejects[r["id"]] = r
    # unparseable lines get the derived id <basename>:<line>
    assert rejects["a.jsonl:46"]["reason"] == "broken_json" and rejects["a.jsonl:46"]["source"].endswith("a.jsonl")
    assert rejects["a.jsonl:46"]["line"] == 46
    assert rejects["a.jsonl:47"]["reason"] == "invalid_utf8"
    assert rejects["no-text"]["reason"] == "missing_text" and rejects["no-text"]["line"] == 48
    assert rejects["a.jsonl:49"]["reason"] == "binary_data"
    assert rejects["dup-exact"]["kept_id"] == "d001"
    # keep: longest -> the edited copy (it gained "（完）") is kept, d002 dropped
    assert rejects["d002"]["reason"] == "duplicate_near" and rejects["d002"]["kept_id"] == "dup-near"
    assert rejects["empty.jsonl:0"]["reason"] == "empty_file"
    assert all(len(r["text"]) <= 300 for r in rejects.values())


def test_shards_manifest_and_cleaning(first_run):
    out, stats = first_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e["split"] for e in manifest["shards"]} == {"train", "valid"}
    docs = read_shards(out, manifest)
    assert len(docs) == stats["written"]
    assert sum(1 for s, _ in docs.values() if s == "valid") >= 1  # >= 20 docs -> valid not empty
    assert "b.txt:1" in docs and "b.txt:2" in docs  # derived ids
    text = docs["html"][1]
    assert text.startswith("HTML&全角") and "<p>" not in text and "http" not in text and "\u200b" not in text
    for e in manifest["shards"]:
        assert e["path"].startswith(e["split"] + "/shard-") and e["path"].endswith(".jsonl.gz")


def test_rerun_is_byte_identical_and_num_shards(corpus, first_run, tmp_path):
    root, _ = corpus
    out, _ = first_run
    run_pipeline([str(root / "*.jsonl"), str(root / "b.txt")], str(tmp_path))
    assert (tmp_path / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    # re-run into the same folder with 3 shards: stale shards are removed
    stats = run_pipeline([str(root / "*.jsonl"), str(root / "b.txt")], str(tmp_path), overrides={"output": {"num_shards": 3}})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    train = [e for e in manifest["shards"] if e["split"] == "train"]
    assert [e["path"] for e in train] == [f"train/shard-{i:05d}-of-00003.jsonl.gz" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [f"shard-{i:05d}-of-00003.jsonl.gz" for i in range(3)]
    assert sum(e["documents"] for e in manifest["shards"]) == stats["written"]


def test_two_workers_same_checksums(corpus, first_run, tmp_path):
    root, _ = corpus
    out, _ = first_run
    run_pipeline([str(root / "*.jsonl"), str(root / "b.txt")], str(tmp_path), workers=2)
    assert (tmp_path / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()


@pytest.mark.slow   # the pipeline CLI end to end
def test_cli(corpus, tmp_path, capsys):
    root, _ = corpus
    rc = main(["--input", str(root / "a.jsonl"), "--output", str(tmp_path), "--valid-fraction", "0.5",
               "--num-shards", "2", "--runner", "DirectRunner", "--parquet"])
    assert rc == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["written_by_split"]["valid"] > 5
    import pyarrow.parquet as pq

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for entry in manifest["shards"]:
        table = pq.read_table(tmp_path / entry["parquet"]["path"])
        assert table.num_rows == entry["documents"] and table.column_names == ["id", "text", "source", "fields"]
    assert "docs/s" in capsys.readouterr().err


@pytest.mark.slow     # 3-4 s: a pipeline run (the fast tier stays under a minute)
def test_traditional_to_simplified_and_sentence_lines(tmp_path):
    """The two optional cleaning steps through a real Beam run."""
    docs = ["他說：「臺灣的颱風來了。」我們趕緊回家吧！後來雨停了，大家都鬆了一口氣。",
            "這本書講述了一個關於友誼與成長的故事；作者的文筆非常優美，故事情節跌宕起伏，值得每一個人認真一讀。"]
    lines = [json.dumps({"id": f"t{i}", "text": t}, ensure_ascii=False) for i, t in enumerate(docs)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    over = {"clean": {"traditional_to_simplified": True, "split_sentences": True, "max_sentence_chars": 20},
            "output": {"valid_fraction": 0.0}}
    stats = run_pipeline([str(tmp_path / "in.jsonl")], str(tmp_path / "out"), overrides=over)
    assert stats["written"] == 2
    out = read_shards(tmp_path / "out", json.loads((tmp_path / "out" / "manifest.json").read_text()))
    assert out["t0"][1] == "他说：「台湾的台风来了。」\n我们赶紧回家吧！\n后来雨停了，大家都松了一口气。"
    assert out["t1"][1].split("\n") == ["这本书讲述了一个关于友谊与成长的故事；",
                                      "作者的文笔非常优美，故事情节跌宕起伏，", "值得每一个人认真一读。"]  # cut at ，


def test_input_that_matches_nothing_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "missing" / "*.jsonl"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no input matched {str(tmp_path / 'missing' / '*.jsonl')!r}"]


def test_id_census_qualifies_every_shared_id_deterministically():
    from pipeline.shards import id_census

    items = [("k1", "7", "/a/x.jsonl", 1), ("k2", "7", "/b/y.jsonl", 1), ("k3", "7", "/b/y.jsonl", 5),
             ("k4", "8", "/a/x.jsonl", 2), ("k5", "9", "/a/z.jsonl", 3), ("k6", "9", "/b/z.jsonl", 3)]
    renames, counts = id_census(items)
    assert renames == [("k1", "7", "7@x.jsonl:1"), ("k2", "7", "7@y.jsonl:1"), ("k3", "7", "7@y.jsonl:5"),
                       ("k5", "9", "9@/a/z.jsonl:3"), ("k6", "9", "9@/b/z.jsonl:3")]  # same basename: full path
    assert counts == {"/a/x.jsonl": {"within_file": 0, "across_files": 1},
                      "/b/y.jsonl": {"within_file": 2, "across_files": 2},
                      "/a/z.jsonl": {"within_file": 0, "across_files": 1},
                      "/b/z.jsonl": {"within_file": 0, "across_files": 1}}
    assert id_census(reversed(items)) == (renames, counts)


@pytest.mark.slow
def test_colliding_ids_are_qualified_counted_and_carry_their_source(tmp_path):
    """#17.2 / #16.15: ids shared across files (merged fewclue-style folders)
    and inside one file become unique; counts by file land in stats.json."""
    rng = random.Random(3)
    texts = [make_doc(rng) for _ in range(8)]
    a = [{"id": str(i), "text": texts[i]} for i in range(3)] + [{"id": "1", "text": texts[3]}]   # "1" twice in a
    b = [{"id": str(i), "text": texts[4 + i]} for i in range(3)] + [{"id": "0", "text": texts[0]}]  # exact copy of a's "0"
    for name, rows in (("a.jsonl", a), ("b.jsonl", b)):
        (tmp_path / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    stats = run_pipeline([str(tmp_path / "*.jsonl")], str(tmp_path / "out"), overrides={"output": {"valid_fraction": 0.0}})
    assert stats["accounted"] and stats["duplicates_exact"] == 1 and stats["written"] == 7
    docs = read_shards(tmp_path / "out", json.loads((tmp_path / "out" / "manifest.json").read_text()))
    a_path, b_path = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    assert sorted(docs) == ["0@a.jsonl:1", "0@b.jsonl:1", "1@a.jsonl:2", "1@a.jsonl:4", "1@b.jsonl:2",
                            "2@a.jsonl:3", "2@b.jsonl:3"]   # b's exact copy of a's "0" is a duplicate, not a collision
    assert docs["1@a.jsonl:4"][1] == texts[3] and docs["0@b.jsonl:1"][1] == texts[4]
    assert stats["duplicate_ids"] == {a_path: {"within_file": 2, "across_files": 4},
                                      b_path: {"within_file": 0, "across_files": 3}}


def test_fnapi_in_memory_same_checksums(corpus, first_run, tmp_path):
    """The default in-memory run is Beam's bundle-based DirectRunner; the FnApiRunner's in-memory
    mode, picked explicitly, writes the same bytes."""
    from pipeline.run import pipeline_options

    assert pipeline_options(batched=True).get_all_options()["runner"] == "BundleBasedDirectRunner"
    assert pipeline_options(batched=True, workers=2).get_all_options()["runner"] == "DirectRunner"
    assert pipeline_options().get_all_options()["runner"] == "DirectRunner"
    root, _ = corpus
    out, _ = first_run
    run_pipeline([str(root / "*.jsonl"), str(root / "b.txt")], str(tmp_path), extra_beam_args=["--direct_running_mode=in_memory"])
    assert (tmp_path / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    assert (tmp_path / "stats.json").read_bytes() == (out / "stats.json").read_bytes()


def test_shard_lines_equal_the_json_encoder():
    """The directly written JSON lines are the bytes ``jsonl_bytes`` writes for every kind of value
    the checks record, and fall back to the encoder for the others."""
    import math

    import numpy as np

    from pipeline.corpus import jsonl_bytes
    from pipeline.shards import shard_lines

    docs = [("a1", "文本\n\"引号\"\\ \u2028 \x01", "k1", "src/ä.jsonl", {"lang": "zh", "lang_score": 0.99, "ppl": 1e-07,
                                                                      "n": 3, "ok": True, "bad": False, "none": None}),
            ("a2", "t", "k2", "s", {"ppl": math.inf, "q": 0.1 + 0.2}),
            ("a3", "t", "k3", "s", {"tags": ["x", "ü"], "np": np.float32(1.5).item(), "big": 10**20, "neg": -0.0}),
            ("a4", "t", "k4", "s", {}), ("a5", "t", "k5", "s"), ("a6", "t", "k6", "s", {"nan": math.nan})]
    want = jsonl_bytes({"id": d[0], "text": d[1], "source": d[3], **(d[4] if len(d) > 4 else {})} for d in docs)
    assert shard_lines(docs) == want
