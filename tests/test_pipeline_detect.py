"""Layout detection: each input layout read the way a user means it, without flags."""

import gzip
import io
import json
import tarfile
import zipfile

import pytest

from pipeline import detect, hints, readers
from pipeline.config import as_dict, load_config

READ = as_dict(load_config())["read"]
SIMP = ["今天上午，市图书馆举办了一场传统手工艺讲座。", "讲座结束后，大家纷纷表示收获很大。", "希望以后能多举办这样的活动，让更多人了解传统文化。"]
TRAD = ["今天上午，市圖書館舉辦了一場傳統手工藝講座。", "講座結束後，大家紛紛表示收穫很大。", "希望以後能多舉辦這樣的活動，讓更多人了解傳統文化。"]


def read(path, **over):
    return list(readers.read_source(str(path), {**READ, **over}))


def docs(path, **over):
    evts = read(path, **over)
    assert [p for k, p in evts if k == "reject"] == []
    return [p for k, p in evts if k == "doc"]


def layout(path, **over):
    ((_, lt),) = readers.plan_inputs([str(path)], {**READ, **over})
    return lt


# -- encodings -----------------------------------------------------------------


@pytest.mark.parametrize("encoding, texts, expected", [
    ("gbk", SIMP, "gb18030"), ("gb18030", SIMP, "gb18030"), ("big5", TRAD, "big5hkscs"),
    ("utf-16", SIMP, "utf-16"), ("utf-16-le", SIMP * 2, "utf-16-le"), ("utf-8-sig", SIMP, "utf-8-sig"),
])
def test_encodings_are_detected_per_file(tmp_path, encoding, texts, expected):
    path = tmp_path / f"x.{encoding}.csv"
    path.write_bytes(("label,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts))).encode(encoding))
    assert layout(path).encoding == expected
    assert [d[1] for d in docs(path)] == texts
    assert [d[3] for d in docs(path)] == list(range(2, len(texts) + 2))


def test_encoding_override_and_its_hint(tmp_path):
    path = tmp_path / "gbk.txt"
    path.write_bytes("\n".join(SIMP * 5).encode("gbk"))
    assert [d[1] for d in docs(path, encoding="gb18030")] == SIMP * 5
    evts = read(path, encoding="utf-8")
    assert {p[0] for k, p in evts} == {"invalid_utf8"}
    lt = layout(path, encoding="utf-8")
    assert hints.reject_hint("invalid_utf8", [lt]) == "read as utf-8; try ENCODING=gb18030 (--encoding gb18030)"


# -- delimited -------------------------------------------------------------------


def test_csv_header_text_column_by_name_and_by_length(tmp_path):
    named = tmp_path / "named.csv"
    named.write_text("cat,label,review\n书籍,1,很好看的一本书\n水果,0,不新鲜\n", encoding="utf-8")
    assert layout(named).text == "review"
    assert [d[1] for d in docs(named)] == ["很好看的一本书", "不新鲜"]
    other = tmp_path / "other.csv"
    other.write_text("kind,score,remark\n书,5," + SIMP[0] + "\n果,3," + SIMP[1] + "\n", encoding="utf-8")
    lt = layout(other)
    assert (lt.header, lt.text) == (True, "remark") and "longest" in lt.describe()


def test_headerless_tsv_label_text_and_text_label(tmp_path):
    cnews = tmp_path / "cnews.txt"
    cnews.write_text("".join(f"体育\t{t * 3}\n" for t in SIMP), encoding="utf-8")
    lt = layout(cnews)
    assert (lt.format, lt.header, lt.text) == ("tsv", False, "1")
    got = docs(cnews)
    assert [d[1] for d in got] == [t * 3 for t in SIMP] and got[0][0] == "cnews.txt:1"
    titles = tmp_path / "dev.txt"
    titles.write_text("".join(f"{t}\t{i}\n" for i, t in enumerate(SIMP)), encoding="utf-8")
    assert layout(titles).text == "0"
    assert [d[1] for d in docs(titles)] == SIMP


def test_undecidable_text_field_stops_with_one_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\t1\n" for a, b in zip(SIMP, reversed(SIMP))), encoding="utf-8")
    with pytest.raises(readers.InputError) as err:
        readers.plan_inputs([str(path)], READ)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    assert "fields found: 0, 1, 2" in message and "TEXT_FIELD" in message
    assert [d[1] for d in docs(path, text_field="0")] == SIMP


# -- JSON --------------------------------------------------------------------------


def test_jsonl_with_other_field_names(tmp_path):
    path = tmp_path / "fewclue.json"
    path.write_text("".join(json.dumps({"id": i, "label": "x", "sentence": t}, ensure_ascii=False) + "\n"
                            for i, t in enumerate(SIMP)), encoding="utf-8")
    lt = layout(path)
    assert (lt.format, lt.text) == ("jsonl", "sentence")
    assert [(d[0], d[1]) for d in docs(path)] == [(str(i), t) for i, t in enumerate(SIMP)]


def test_json_array_of_lists_c3(tmp_path):
    path = tmp_path / "c3.json"
    items = [[[SIMP[0], SIMP[1]], [{"question": "问?", "choice": ["甲", "乙"]}], "1-1"], [[SIMP[2]], [], "1-2"]]
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    assert layout(path).text == "0"
    assert [(d[0], d[1], d[3]) for d in docs(path)] == [("c3.json:1", SIMP[0] + "\n" + SIMP[1], 1), ("c3.json:2", SIMP[2], 2)]


def test_json_squad_paragraphs_and_text_field_paths(tmp_path):
    squad = {"version": "v1", "data": [
        {"title": "甲", "paragraphs": [{"id": "P1", "context": SIMP[0] * 3, "qas": [{"question": "问", "answers": [{"text": "答"}]}]},
                                        {"id": "P2", "context": SIMP[1] * 3, "qas": []}]},
        {"title": "乙", "paragraphs": [{"id": "P3", "context": SIMP[2] * 3, "qas": []}]}]}
    path = tmp_path / "cmrc.json"
    path.write_text(json.dumps(squad, ensure_ascii=False, indent=2), encoding="utf-8")
    lt = layout(path)
    assert (lt.record_prefix, lt.text, lt.suggested_text) == ("data.item.paragraphs.item", "context", "data.paragraphs.context")
    expected = [("P1", SIMP[0] * 3), ("P2", SIMP[1] * 3), ("P3", SIMP[2] * 3)]
    assert [(d[0], d[1]) for d in docs(path)] == expected
    for path_given in ("data.paragraphs.context", "context"):
        assert [(d[0], d[1]) for d in docs(path, text_field=path_given)] == expected
    assert [d[1] for d in docs(path, text_field="data.title")] == ["甲", "乙"]


def test_poetry_list_fields_are_joined_and_nested_paths(tmp_path):
    path = tmp_path / "poet.json"
    poems = [{"author": "李白", "title": "静夜思", "paragraphs": ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"], "id": "u1"}]
    path.write_text(json.dumps(poems, ensure_ascii=False, indent=2), encoding="utf-8")
    assert [(d[0], d[1]) for d in docs(path)] == [("u1", "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。")]
    nested = tmp_path / "nested.jsonl"
    nested.write_text(json.dumps({"meta": {"body": SIMP[0]}, "n": 1}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert docs(nested, text_field="meta.body")[0][1] == SIMP[0]
    assert layout(nested).text == "meta.body"


# -- archives and pseudo-XML ---------------------------------------------------------


def test_zip_of_csvs_member_by_member(tmp_path):
    path = tmp_path / "shop.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/one.csv", "cat,label,review\n书籍,1,很好看\n水果,0,不新鲜\n")
        zf.writestr("two.jsonl.gz", gzip.compress(json.dumps({"text": SIMP[0]}, ensure_ascii=False).encode() + b"\n"))
        zf.writestr("__MACOSX/._one.csv", b"\x00\x05junk")
    got = docs(path)
    assert [(d[0], d[1], d[2], d[3]) for d in got] == [
        ("shop.zip/a/one.csv:2", "很好看", f"{path}/a/one.csv", 2),
        ("shop.zip/a/one.csv:3", "不新鲜", f"{path}/a/one.csv", 3),
        ("shop.zip/two.jsonl.gz:1", SIMP[0], f"{path}/two.jsonl.gz", 1)]
    assert [s for s, _ in readers.plan_inputs([str(path)], READ)] == [f"{path}/a/one.csv", f"{path}/two.jsonl.gz"]


def test_tar_gz_members_and_a_damaged_member(tmp_path):
    path = tmp_path / "corpus.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in (("x.txt", "\n".join(SIMP).encode()), ("empty.txt", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    evts = read(path)
    assert [(k, p[0] if k == "reject" else p[1]) for k, p in evts] == [("doc", t) for t in SIMP] + [("reject", "empty_file")]
    assert evts[0][1][0] == "corpus.tar.gz/x.txt:1" and evts[-1][1][2] == f"{path}/empty.txt"
    assert readers.expand_input(str(tmp_path)) == [str(path)]


def test_pseudo_xml_docs(tmp_path):
    body = "<docs>\n" + "".join(
        f"<doc>\n<url>http://x/{i}</url>\n<docno>{i}</docno>\n<contenttitle>题{i}</contenttitle>\n<content>{t}</content>\n</doc>\n"
        for i, t in enumerate(SIMP)) + "<doc>\n<content>没有结束\n</docs>\n"
    path = tmp_path / "sogou.dat"
    path.write_bytes(body.encode("gbk"))
    lt = layout(path)
    assert (lt.format, lt.encoding, lt.text) == ("xml", "gb18030", "content")
    evts = read(path)
    assert [p[1] for k, p in evts if k == "doc"] == SIMP
    assert [p[3] for k, p in evts if k == "doc"] == [2, 8, 14]
    assert [(p[0], p[3]) for k, p in evts if k == "reject"] == [("broken_xml", 20)]
    assert readers.expand_input(str(tmp_path)) == [str(path)]


def test_parquet_text_column_detected(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"label": [1, 0], "content": SIMP[:2]}), path)
    assert [d[1] for d in docs(path)] == SIMP[:2]


# -- hints -------------------------------------------------------------------------------


def test_hints_name_the_fields_and_the_setting():
    lt = detect.Layout("csv", text="foo", fields=("label", "review"), suggested_text="review")
    stats = {"read": 19753, "written": 0, "rejected": {"missing_text": 19753}}
    assert hints.zero_output_message(stats, [lt]) == (
        "0 documents written from 19,753 records: missing_text 19,753; fields found: label, review; "
        "try TEXT_FIELD=review (--text-field review)")
    assert hints.zero_output_message({**stats, "written": 1}, [lt]) is None
    picked_label = detect.Layout("csv", text="label", fields=("label", "review"), suggested_text="review")
    assert hints.reject_hint("too_short", [picked_label]).endswith("try TEXT_FIELD=review (--text-field review)")
    tsv = detect.Layout("csv", fields=("0",), suggested_format="tsv")
    assert hints.reject_hint("broken_csv", [tsv]) == "read as csv; try FORMAT=tsv (--format tsv)"
    ok = detect.Layout("csv", text="review", fields=("label", "review"), suggested_text="review")
    assert "relax filters" in hints.reject_hint("too_short", [ok])


def test_filter_rejects_name_their_setting_and_a_run_with_many_warns():
    ok = detect.Layout("csv", text="review", fields=("label", "review"), suggested_text="review")
    assert hints.reject_hint("too_short", [ok]).endswith(
        "or relax filters.min_chars: SET='filters.min_chars=2' (--set filters.min_chars=2)")
    assert hints.setting_for("lang_en") == ("langid.languages", "[zh,en]")
    assert hints.setting_for("pii_id_card") == ("pii.id_card", "mask")
    assert hints.setting_for("duplicate_exact") is None
    stats = {"read": 100, "written": 50, "rejected": {"too_short": 40, "mojibake": 10}}
    assert hints.high_reject_message(stats, [ok], 0.2).startswith(
        "50 of 100 records rejected (50%: too_short 40, mojibake 10); fields found: label, review;")
    assert hints.high_reject_message({**stats, "rejected": {"too_short": 20}}, [ok], 0.2) is None
    assert hints.high_reject_message({**stats, "written": 0}, [ok], 0.2) is None   # the zero-output error says it


def test_file_warning_above_the_threshold_only():
    lt = detect.Layout("jsonl", text="text", fields=("id", "body"), suggested_text="text")
    assert hints.file_warning("a.jsonl", {"missing_text": 1}, 10, lt, 0.2) is None
    warning = hints.file_warning("a.jsonl", {"missing_text": 9}, 10, lt, 0.2, ["title"])
    assert warning == ("a.jsonl: 9 of 10 records rejected (missing_text 9); fields found: id, body, title; "
                       "set TEXT_FIELD (--text-field) to the field with the text")


def test_reader_warns_about_a_file_it_mostly_rejects(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"id": i, "body": t}, ensure_ascii=False) + "\n" for i, t in enumerate(SIMP)),
                    encoding="utf-8")
    with caplog.at_level("WARNING", logger="pipeline.read"):
        evts = read(path, text_field="text")
    assert {p[0] for k, p in evts} == {"missing_text"}
    assert f"{path}: 3 of 3 records rejected (missing_text 3); fields found: id, body; try TEXT_FIELD=body" in caplog.text


# -- the command line ----------------------------------------------------------------------


def test_cli_undecidable_layout_is_one_line_before_any_work(tmp_path, capsys):
    from pipeline.run import main

    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in zip(SIMP, reversed(SIMP))), encoding="utf-8")
    assert main(["--input", str(path), "--output", str(tmp_path / "out")]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(err) == 1 and "fields found: 0, 1" in err[0]
    assert not (tmp_path / "out" / "stats.json").exists()


@pytest.mark.slow
def test_cli_zero_documents_exit_non_zero_with_the_hint_then_succeed(tmp_path, capsys):
    from pipeline.run import main

    path = tmp_path / "reviews.csv"
    path.write_text("label,review\n" + "".join(f"1,{t}\n" for t in SIMP), encoding="utf-8")
    assert main(["--input", str(path), "--output", str(tmp_path / "out"), "--text-field", "comment"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("error: 0 documents written from 3 records: missing_text 3; fields found: label, review; "
                       "try TEXT_FIELD=review (--text-field review)")
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["rejected"] == {"missing_text": 3}
    assert main(["--input", str(path), "--output", str(tmp_path / "out"), "--text-field", "review"]) == 0
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("\n".join(SIMP).encode("gbk"))
    assert main(["--input", str(gbk), "--output", str(tmp_path / "out2"), "--encoding", "gb18030"]) == 0
    assert json.loads((tmp_path / "out2" / "stats.json").read_text())["written"] == 3


@pytest.mark.slow
def test_cli_set_overrides_a_key_and_warns_about_many_rejects(tmp_path, capsys):
    from pipeline.run import main

    path = tmp_path / "posts.txt"
    path.write_text("\n".join(["不敢相信", "味道巴适", "好评！"] + SIMP) + "\n", encoding="utf-8")
    assert main(["--input", str(path), "--output", str(tmp_path / "out")]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["rejected"] == {"too_short": 1} and stats["written"] == 5
    assert not [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning")]
    assert main(["--input", str(path), "--output", str(tmp_path / "out"), "--set", "filters.min_chars=12"]) == 0
    warn = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning")]
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["rejected"] == {"too_short": 3}
    assert len(warn) == 1 and warn[0].startswith("warning: 3 of 6 records rejected (50%: too_short 3);")
    assert warn[0].endswith("(--set filters.min_chars=2)")
    assert main(["--input", str(path), "--output", str(tmp_path / "o2"), "--set", "filters.min_char=2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: pipeline config: unknown key 'filters.min_char'")
    assert not (tmp_path / "o2" / "stats.json").exists()


@pytest.mark.slow     # 1-2 s: runs make (the fast tier stays under a minute)
def test_make_data_passes_set_as_separate_arguments(tmp_path):
    """SET='k=v ...' becomes --set k=v per word, never shell text: a bad key is one line, and
    a shell expression in a value is not run."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "a.txt").write_text("\n".join(SIMP) + "\n", encoding="utf-8")
    proc = subprocess.run(["make", "-s", "-o", "setup", "-o", ".venv/.setup-stamp", "data",
                           f"CORPUS={tmp_path}/a.txt", f"OUT={tmp_path}/out",
                           # make turns $$ into $: the shell would see `touch${IFS}.../p` if it evaluated it
                           f"SET=filters.min_char=2 read.id_field=`touch$${{IFS}}{tmp_path}/p`"],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: pipeline config: unknown key 'filters.min_char'"), errors
    assert not (tmp_path / "p").exists() and not (tmp_path / "out" / "stats.json").exists()


# -- the real corpora ------------------------------------------------------------------------

CORPUS_RECORDS = {  # folder: records (shared data README), every one read as a document
    "c3": 6857, "chinese_poetry": 1985, "cmrc2018": 1104, "fewclue": 30683, "sogou_news_smarty": 400,
    "sophonplus_reviews": 82527, "thucnews_cnews_subset": 1000, "thucnews_titles": 20010,
    "weibo_senti_subset": 2400, "zhwiki_sample": 286,
}


@pytest.mark.slow
def test_every_shared_corpus_folder_reads_without_flags(shared_data):
    folders = sorted(p.name for p in (shared_data / "corpus").iterdir() if p.is_dir())
    assert folders == sorted(CORPUS_RECORDS)
    for folder, expected in CORPUS_RECORDS.items():
        paths = readers.expand_input(str(shared_data / "corpus" / folder))
        readers.plan_inputs(paths, READ)   # decidable: no InputError
        kinds = [k for path in paths for k, _ in readers.read_source(path, READ)]
        assert (len(kinds), kinds.count("doc")) == (expected, expected), folder


def test_delimiter_and_jsonl_with_a_huge_first_line(tmp_path):
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("label\treview\n1\t很好看\n0\t不新鲜\n", encoding="utf-8")
    assert (layout(tabs).format, [d[1] for d in docs(tabs)]) == ("tsv", ["很好看", "不新鲜"])
    big = tmp_path / "big.json"   # JSON lines whose first record is longer than the sniffed head
    lines = [{"id": "a", "text": "长" * 600_000}, {"id": "b", "text": SIMP[0]}, {"id": "c", "text": SIMP[1]}]
    big.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
    assert [(d[0], len(d[1])) for d in docs(big, max_record_bytes=10_000_000)] == [("a", 600_000), ("b", len(SIMP[0])), ("c", len(SIMP[1]))]
