"""Adversarial inputs for the readers (issue #16 items 1, 2, 3, 15).

Each test builds its hostile file under tmp_path and checks that every record
is either read or rejected with its own line: nothing after the damage is lost.
"""

import gzip
import json
import random
import tracemalloc
import zlib

from pipeline import readers

CFG = {"text_field": "text", "id_field": "id", "max_record_bytes": 100_000}
WORDS = "今天天气很好我们一起去公园散步看到很多人在湖边钓鱼孩子们放风筝老人下棋小狗追着蝴蝶跑来跑去"


def events(path, **over):
    return list(readers.read_source(str(path), {**CFG, **over}))


def docs_of(evts):
    return [p for k, p in evts if k == "doc"]


def rejects_of(evts):
    return [p for k, p in evts if k == "reject"]


def review(rng, i):
    return "".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40))) + f"第{i}条"


def csv_rows(n, seed=0):
    rng = random.Random(seed)
    return [(str(rng.randint(0, 1)), review(rng, i)) for i in range(1, n + 1)]


def write_csv(path, rows, header=("label", "review"), replace=None):
    """rows as CSV lines; ``replace`` = {row number (1-based): raw bytes}."""
    lines = [",".join(header).encode()]
    for i, (label, text) in enumerate(rows, start=1):
        lines.append((replace or {}).get(i, f"{label},{text}".encode()))
    path.write_bytes(b"\n".join(lines) + b"\n")


# -- item 1: one invalid byte rejects only its row ----------------------------


def test_csv_invalid_byte_rejects_only_its_row(tmp_path):
    rows = csv_rows(500)
    bad = f"{rows[300][0]},{rows[300][1]}".encode()
    bad = bad[:10] + b"\xff" + bad[10:]            # row 301, physical line 302
    path = tmp_path / "reviews.csv"
    write_csv(path, rows, replace={301: bad})
    evts = events(path, text_field="review")
    docs, rejects = docs_of(evts), rejects_of(evts)
    assert len(docs) == 499 and len(rejects) == 1
    reason, rid, source, line, snippet, _ = rejects[0]
    assert (reason, line, source) == ("invalid_utf8", 302, str(path))
    assert rid == "reviews.csv:302"
    assert rows[300][1][-6:] in snippet               # the snippet shows the row
    texts = [d[1] for d in docs]
    assert texts == [r[1] for i, r in enumerate(rows) if i != 300]
    assert [d[3] for d in docs][300] == 303           # lines stay true after the bad row


# -- item 2: an unclosed quote does not swallow the rows after it -------------


def test_csv_unclosed_quote_resynchronises_at_the_next_row(tmp_path):
    rows = csv_rows(500, seed=1)
    path = tmp_path / "quote.csv"
    write_csv(path, rows, replace={10: f'{rows[9][0]},"{rows[9][1]}'.encode(),
                                   40: f'{rows[39][0]},{rows[39][1]}"'.encode()})  # a stray quote later on
    evts = events(path, text_field="review")
    rejects = rejects_of(evts)
    assert [(r[0], r[3]) for r in rejects] == [("runaway_field", 11)]
    assert rows[9][1][:5] in rejects[0][4]
    docs = docs_of(evts)
    assert len(docs) == 499
    assert docs[9][1] == rows[10][1] and docs[9][3] == 12         # row 11 read on its own line
    assert docs[38][1] == rows[39][1] + '"'


def test_csv_runaway_field_without_a_recognisable_row_start(tmp_path):
    """Unique ids in the first column give no row-start pattern: the field is
    cut at max_record_lines, and the swallowed lines are read again."""
    rows = [(f"id-{i:04d}", text) for i, (_, text) in enumerate(csv_rows(300, seed=2), start=1)]
    path = tmp_path / "ids.csv"
    write_csv(path, rows, header=("id", "text"), replace={100: f'id-0100,"{rows[99][1]}'.encode()})
    evts = events(path, max_record_lines=50)
    assert [(r[0], r[1], r[3]) for r in rejects_of(evts)] == [("runaway_field", "ids.csv:101", 101)]
    assert [d[0] for d in docs_of(evts)] == [r[0] for r in rows if r[0] != "id-0100"]


def test_csv_quote_open_at_end_of_file(tmp_path):
    rows = csv_rows(30, seed=3)
    path = tmp_path / "tail.csv"
    write_csv(path, rows, header=("id", "text"), replace={28: f'x28,"{rows[27][1]}'.encode()})
    evts = events(path)
    assert [(r[0], r[3]) for r in rejects_of(evts)] == [("runaway_field", 29)]
    assert [d[1] for d in docs_of(evts)][-2:] == [rows[28][1], rows[29][1]]


# -- item 3: a truncated multi-member gzip is counted --------------------------


def jsonl_records(n, start=0):
    return [json.dumps({"id": f"g{i}", "text": f"第{i}篇文档的内容"}, ensure_ascii=False) + "\n" for i in range(start, start + n)]


def test_truncated_multi_member_gzip_is_counted(tmp_path):
    members = [gzip.compress("".join(jsonl_records(10, k * 10)).encode()) for k in range(3)]
    path = tmp_path / "parts.jsonl.gz"
    path.write_bytes(members[0] + members[1] + members[2][: len(members[2]) // 2])
    evts = events(path)
    docs, rejects = docs_of(evts), rejects_of(evts)
    assert [r[0] for r in rejects] == ["truncated_file"]
    ids = [d[0] for d in docs]
    assert ids[:20] == [f"g{i}" for i in range(20)]          # what was read is kept, in order
    assert ids == [f"g{i}" for i in range(len(ids))] and len(ids) < 30
    assert rejects[0][3] == docs[-1][3] + 1                  # the line where the data stops


def test_truncated_single_gzip_and_intact_multi_member(tmp_path):
    whole = gzip.compress("".join(jsonl_records(30)).encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[:-6])                              # only the trailer is missing
    assert [r[0] for r in rejects_of(events(cut))] == ["truncated_file"]
    ok = tmp_path / "ok.jsonl.gz"                            # members + zero padding: complete
    ok.write_bytes(gzip.compress("".join(jsonl_records(15)).encode()) + gzip.compress(
        "".join(jsonl_records(15, 15)).encode()) + b"\x00" * 64)
    evts = events(ok)
    assert rejects_of(evts) == [] and len(docs_of(evts)) == 30


def test_truncated_zlib_deflate_stream(tmp_path):
    path = tmp_path / "d.jsonl.deflate"
    path.write_bytes(zlib.compress("".join(jsonl_records(20)).encode())[:-3])
    assert rejects_of(events(path))[-1][0] == "truncated_file"


# -- item 15: JSON arrays are streamed; oversize records keep id and snippet ---


def write_array(path, n):
    path.write_text("[" + ",".join(json.dumps({"id": f"r{i}", "text": "长文本" * 1000 + str(i)}, ensure_ascii=False)
                                   for i in range(n)) + "]", encoding="utf-8")


def peak_bytes(path):
    tracemalloc.start()
    try:
        count = sum(1 for kind, _ in readers.read_source(str(path), CFG) if kind == "doc")
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_json_array_memory_does_not_grow_with_the_file(tmp_path):
    small, large = tmp_path / "small.json", tmp_path / "large.json"
    write_array(small, 150)      # 1.4 MB: more than the head the reader sniffs
    write_array(large, 600)      # 5.4 MB
    n_small, peak_small = peak_bytes(small)
    n_large, peak_large = peak_bytes(large)
    assert (n_small, n_large) == (150, 600)
    assert peak_large < 1.3 * peak_small                   # bounded by the record, not the file
    assert peak_large < large.stat().st_size


def test_json_record_too_large_keeps_id_and_first_chars(tmp_path):
    records = [{"id": "a", "text": "第一篇"}, {"id": "big-7", "text": "长" * 5000}, {"text": "长" * 5000, "id": "late"},
               {"id": "b", "text": "最后一篇"}]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    evts = events(path, max_record_bytes=1000)
    assert [(k, p[0] if k == "reject" else p[0]) for k, p in evts] == [
        ("doc", "a"), ("reject", "record_too_large"), ("reject", "record_too_large"), ("doc", "b")]
    first, second = rejects_of(evts)
    assert first[1] == "big-7" and first[3] == 2
    assert first[4].startswith('{"id": "big-7", "text": "长长长') and len(first[4]) == 200
    assert second[1] == "late" and second[4].startswith('{"text": "长长')


def test_jsonl_record_too_large_keeps_id_and_first_chars(tmp_path):
    path = tmp_path / "big.jsonl"
    lines = [json.dumps({"id": "x1", "text": "短文"}, ensure_ascii=False),
             json.dumps({"id": "huge-2", "text": "长" * 5000}, ensure_ascii=False)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rej = rejects_of(events(path, max_record_bytes=1000))
    assert [(r[0], r[1], r[3]) for r in rej] == [("record_too_large", "huge-2", 2)]
    assert rej[0][4].startswith('{"id": "huge-2"') and len(rej[0][4]) == 200


def test_truncated_tar_gz_keeps_the_members_before_the_cut(tmp_path):
    import io
    import tarfile

    rng = random.Random(5)
    path = tmp_path / "corpus.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for k in range(3):
            data = "".join(json.dumps({"id": f"t{k * 10 + i}", "text": review(rng, i) * 40}, ensure_ascii=False) + "\n"
                           for i in range(10)).encode()
            info = tarfile.TarInfo(f"part{k}.jsonl")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 9 // 10])          # the cut falls inside part2
    evts = events(path)
    ids = [p[0] for k, p in evts if k == "doc"]
    assert ids[:20] == [f"t{i}" for i in range(20)] and len(ids) < 30
    rejects = rejects_of(evts)
    assert [r[0] for r in rejects] == ["truncated_file"] and rejects[0][2] == f"{path}/part2.jsonl"
