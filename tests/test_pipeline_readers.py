"""Readers turn every input record into a doc or a counted reject, never a crash."""

import bz2
import gzip
import json

import zstandard

from pipeline import readers

CFG = {"text_field": "text", "id_field": "id", "max_record_bytes": 1000}


def events(path, **over):
    return list(readers.read_source(str(path), {**CFG, **over}))


def kinds(evts):
    return [(k, p[0]) if k == "reject" else (k, p[0]) for k, p in evts]


def test_jsonl_with_malformed_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [
        json.dumps({"id": "x1", "text": "第一篇"}, ensure_ascii=False).encode(),
        b'{"id": "x2", "text": "broken',
        b"",
        json.dumps({"id": "x3", "body": "no text"}).encode(),
        '{"text": "无编号"}'.encode(),
        b'{"id": "x5", "text": "\xff\xfe bad utf8"}',
        b"\x00\x01\x02 binary junk",
        b'{"id": "x7", "text": "' + "长".encode() * 600 + b'"}',
        b"[1, 2]",
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = kinds(events(path))
    assert got == [
        ("doc", "x1"),
        ("reject", "broken_json"),
        ("reject", "missing_text"),
        ("doc", "a.jsonl:5"),
        ("reject", "invalid_utf8"),
        ("reject", "binary_data"),
        ("reject", "record_too_large"),
        ("reject", "not_an_object"),
    ]
    rej = [p for k, p in events(path) if k == "reject"]
    assert [r[3] for r in rej] == [2, 4, 6, 7, 8, 9]  # line numbers
    assert all(r[2] == str(path) for r in rej)


def test_huge_single_line_is_streamed(tmp_path):
    path = tmp_path / "big.txt"
    with open(path, "wb") as f:
        f.write(("很长" * 1_000_000).encode())  # 6 MB, no newline
        f.write("\n下一行正常\n".encode())
    got = events(path, max_record_bytes=1 << 20)
    assert got[0][0] == "reject" and got[0][1][0] == "record_too_large" and got[0][1][3] == 1
    assert got[1] == ("doc", ("big.txt:2", "下一行正常", str(path), 2))


def test_empty_file_and_corrupt_gzip(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert kinds(events(empty)) == [("reject", "empty_file")]
    bad = tmp_path / "bad.jsonl.gz"
    good_part = gzip.compress(b'{"id": "g", "text": "ok"}\n')
    bad.write_bytes(good_part[:-12] + b"junkjunkjunk" * 3)
    got = kinds(events(bad))
    assert got[-1][0] == "reject"  # truncated stream: garbage bytes or a read error
    junk = tmp_path / "junk.jsonl.gz"
    junk.write_bytes(b"junk\x00\x01 not gzip at all")
    assert kinds(events(junk)) == [("reject", "unreadable_file")]


def test_compressed_variants(tmp_path):
    data = "".join(json.dumps({"id": i, "text": f"文档{i}"}, ensure_ascii=False) + "\n" for i in range(3)).encode()
    for name, blob in (
        ("d.jsonl.gz", gzip.compress(data)),
        ("d.jsonl.bz2", bz2.compress(data)),
        ("d.jsonl.zst", zstandard.ZstdCompressor().compress(data)),
    ):
        p = tmp_path / name
        p.write_bytes(blob)
        got = events(p)
        assert [e[1][:2] for e in got] == [("0", "文档0"), ("1", "文档1"), ("2", "文档2")], name


def test_plain_text_lines_and_blocks(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("第一段第一行\n第一段第二行\n\n\n第二段\n", encoding="utf-8")
    assert [e[1][:2] for e in events(p)] == [("t.txt:1", "第一段第一行"), ("t.txt:2", "第一段第二行"), ("t.txt:5", "第二段")]
    assert [e[1][:2] for e in events(p, text_unit="block")] == [("t.txt:1", "第一段第一行\n第一段第二行"), ("t.txt:5", "第二段")]


def test_csv_tsv_and_json_array(tmp_path):
    c = tmp_path / "r.csv"
    c.write_text('\ufefflabel,review\n1,"很好，\n下次再来"\n0,不好\n1\n', encoding="utf-8")
    got = events(c, text_field="review")
    assert kinds(got) == [("doc", "r.csv:2"), ("doc", "r.csv:4"), ("reject", "broken_csv")]
    assert got[0][1][1] == "很好，\n下次再来"
    t = tmp_path / "r.tsv"
    t.write_text("id\ttext\nk1\t你好世界\n", encoding="utf-8")
    assert events(t)[0][1][:2] == ("k1", "你好世界")
    j = tmp_path / "arr.json"
    j.write_text(json.dumps([{"id": "a", "text": "甲"}, {"text": "乙"}, 3], ensure_ascii=False), encoding="utf-8")
    assert kinds(events(j)) == [("doc", "a"), ("doc", "arr.json:2"), ("reject", "not_an_object")]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["一", None]}), p)
    assert kinds(events(p)) == [("doc", "p1"), ("reject", "missing_text")]


def test_expand_directory_and_glob(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "sub" / "b.txt.gz").write_bytes(gzip.compress(b"x\n"))
    (tmp_path / "sub" / "notes.md").write_text("skip")
    (tmp_path / ".hidden.jsonl").write_text("{}")
    got = readers.expand_input(str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in got] == ["a.jsonl", "b.txt.gz"]
    assert readers.expand_input(str(tmp_path / "*.jsonl")) == [str(tmp_path / "a.jsonl")]
    assert readers.parse_hf_spec("hf:user/ds:cfg:validation") == ("user/ds", "cfg", "validation")
    assert readers.parse_hf_spec("hf:/data/x") == ("/data/x", None, "train")


def test_hf_save_to_disk_and_local_files(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"id": ["h1", "h2"], "text": ["第一", "第二"]})
    ds.save_to_disk(str(tmp_path / "saved"))
    got = events(f"hf:{tmp_path / 'saved'}")
    assert [e[1][:2] for e in got] == [("h1", "第一"), ("h2", "第二")]
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text('{"text": "本地一"}\n{"text": "本地二"}\n', encoding="utf-8")
    got = events(f"hf:{files}")
    assert [e[1][1] for e in got] == ["本地一", "本地二"]
    assert got[0][1][0] == "files:train:1"
