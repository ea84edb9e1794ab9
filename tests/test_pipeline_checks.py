"""Data-quality checks: the per-batch function, and the acceptance run of #22 through the CLI."""
import gzip
import json
import subprocess
import sys

import pytest

from pipeline import checks
from pipeline.config import load_config

NEWS = ["南屏市图书馆今天举办了一场传统手工艺讲座，吸引了许多市民前来参加。讲座结束后，大家还参观了馆内的古籍修复室。",
        "青溪镇的茶农今年春天决定改种耐旱的茶树品种，经过反复试验，新茶的口感得到了专家的一致好评。",
        "临江市交通局宣布，明年起将新开三条公交线路，方便城郊居民出行，预计每天可服务上万名乘客。",
        "星禾科技的工程师利用周末时间，为山区小学搭建了一套远程教学系统，孩子们第一次上了网络课。",
        "社区志愿者服务队连续三年坚持清理河道里的垃圾，如今石湾河又恢复了往日的清澈，鱼也多了起来。"]
JAPANESE = "明日の会議は午後三時からに変更になりましたので、関係者の皆様はご確認をお願いします。資料は事前に送付いたします。"
GAMBLING = "澳门赌场真人荷官在线发牌，百家乐、时时彩应有尽有，注册送彩金，首存送百分之百，稳赚不赔，快来网上赌场！"
EVAL = "怎么才能在三个月之内把英语口语练到可以流利交流的水平呢"


def _cfg(tmp_path, **over):
    ev = tmp_path / "eval.txt"
    ev.write_text(EVAL + "\n", encoding="utf-8")
    raw = {"decontam": {"project_sets": False, "eval_sets": [{"name": "mine", "path": str(ev), "format": "lines"}]}}
    raw.update(over)
    return load_config(None, raw)


def test_run_checks_decisions_and_counts(tmp_path):
    c = checks.Checks(_cfg(tmp_path))
    docs = [NEWS[0], NEWS[1] + "联系电话13812345678。", JAPANESE, GAMBLING, NEWS[2] + EVAL + "。"]
    batch = [(f"k{i}", (f"d{i}", t, "src.jsonl", i + 1)) for i, t in enumerate(docs)]
    kept, rejects, counts, fields = checks.run_checks(batch, c)
    assert [k[1][0] for k in kept] == ["d0", "d1"]
    assert kept[1][1][1].endswith("联系电话<mobile>。") and kept[1][0] != "k1"      # masked, key follows the text
    assert fields["k0"]["lang"] == "zh" and fields["k0"]["lang_score"] > 0.9
    assert sorted(r[0] for r in rejects) == ["decontam_mine", "lang_ja", "wordlist_gambling"]
    assert counts["pii"] == {"mobile": 1, "documents": 1} and counts["decontamination"] == {"mine": 1}
    assert counts["langid"]["zh"] == 4 and counts["langid"]["ja"] == 1
    flagged, rejects, _, fields = checks.run_checks(batch[4:], checks.Checks(_cfg(tmp_path, decontam={
        "project_sets": False, "action": "flag",
        "eval_sets": [{"name": "mine", "path": str(tmp_path / "eval.txt"), "format": "lines"}]})))
    assert not rejects and fields[flagged[0][0]]["contaminated"] == ["mine"]
    assert checks.merge_counts({"pii": {"mobile": 1}, "q": [1, 2]}, {"pii": {"mobile": 2, "email": 1}, "q": [1, 1]}) == \
        {"pii": {"mobile": 3, "email": 1}, "q": [2, 3]}


@pytest.mark.slow
def test_acceptance_planted_corpus_through_the_cli(tmp_path, shared_data):
    """#22 acceptance: planted PII, listed words, foreign-language documents and copies of
    evaluation sentences are each masked, rejected or flagged with a reason, through
    ``python -m pipeline`` (what ``make data`` runs), and the accounting identity holds."""
    sts = (shared_data / "sts/senteval_cn/LCQMC/LCQMC.test.data").read_text(encoding="utf-8").splitlines()
    sts_sentence = next(line.split("\t")[0] for line in sts if len(line.split("\t")[0]) >= 12)
    rows = [{"id": f"news{i}", "text": t} for i, t in enumerate(NEWS)]
    rows += [
        {"id": "pii", "text": NEWS[0] + "报名请联系王老师，手机138-1234-5678，身份证号11010519491231002X。"},
        {"id": "ja", "text": JAPANESE},
        {"id": "en", "text": "The meeting has been moved to Thursday afternoon because the projector is broken."},
        {"id": "ad", "text": GAMBLING},
        {"id": "leak", "text": NEWS[3] + "网友提问：" + sts_sentence + "？"},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(tmp_path / "in.jsonl"), "--output", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["accounted"] and stats["read"] == len(rows)
    assert stats["read"] == stats["written"] + sum(stats["rejected"].values()) + stats["duplicates_exact"] + stats["duplicates_near"]
    assert stats["rejected"] == {"decontam_sts-lcqmc": 1, "lang_ja": 1, "low_chinese_ratio": 1, "wordlist_gambling": 1}
    assert stats["pii"] == {"documents": 1, "id_card": 1, "mobile": 1}
    assert stats["decontamination"] == {"sts-lcqmc": 1} and stats["decontamination_sets"]["sts-lcqmc"] == "checked"
    written, records = {}, {}
    for entry in json.loads((out / "manifest.json").read_text(encoding="utf-8"))["shards"]:
        with gzip.open(out / entry["path"], "rt", encoding="utf-8") as f:
            for r in map(json.loads, f):
                written[r["id"]], records[r["id"]] = r["text"], r
    assert "手机<mobile>，身份证号<id_card>。" in written["pii"]
    # the language and its score stay in the output record (for later sampling)
    assert all(r["lang"] == "zh" and 0 < r["lang_score"] <= 1 for r in records.values()), records
    for reason, doc_id in (("lang_ja", "ja"), ("wordlist_gambling", "ad"), ("decontam_sts-lcqmc", "leak")):
        with gzip.open(out / "rejects" / f"{reason}.jsonl.gz", "rt", encoding="utf-8") as f:
            assert [r["id"] for r in map(json.loads, f)] == [doc_id]


@pytest.mark.slow     # 1-2 s (the fast tier stays under a minute)
def test_preflight_names_a_missing_file_in_one_line_before_the_run(tmp_path):
    """A user's eval set, word list or quality model that is not there stops the run where it starts,
    with one line, and nothing is written (it used to surface as a worker's traceback in Beam's log)."""
    from conftest import REPO
    from pipeline.typed_config import ConfigError

    for over, needle in (({"decontam": {"eval_sets": [{"name": "x", "path": str(tmp_path / "no.tsv")}]}},
                          "decontam.eval_sets: 'x': no file matches"),
                         ({"wordlists": {"lists": [{"name": "mine", "path": str(tmp_path / "no.txt")}]}},
                          "wordlists.mine: cannot read"),
                         ({"quality": {"model": str(tmp_path / "no.npz")}}, "quality.model:")):
        with pytest.raises(ConfigError, match=needle):
            checks.preflight(load_config(None, over))
    checks.preflight(load_config(None))                      # the defaults need nothing the checkout lacks
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--input", "data/sample/news.jsonl", "--output",
                           str(tmp_path / "out"), "--set", f"quality.model={tmp_path / 'no.npz'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: quality.model:"), proc.stderr
    assert not (tmp_path / "out").exists()
