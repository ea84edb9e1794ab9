"""Decontamination: character 13-grams after normalization, short items whole, counts per set."""
import pytest

from pipeline import decontam
from pipeline.typed_config import ConfigError


def _user_set(tmp_path, lines, name="mine"):
    path = tmp_path / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"name": name, "path": str(path), "format": "lines"}


def test_normalization_makes_copies_match(tmp_path):
    ev = _user_set(tmp_path, ["北京大学图书馆今天下午举办了一场传统手工艺讲座，吸引了很多市民。", "怎么查看我的借呗额度"])
    d = decontam.Decontaminator({"project_sets": False, "eval_sets": [ev]})
    # punctuation, spacing, full-width and traditional characters do not hide a copy
    assert d("新闻：北京大學圖書館 今天下午，舉辦了一場傳統手工藝講座！") == ("decontam_mine", ["mine"])
    assert d("请问怎么查看我的借呗额度呢") == ("decontam_mine", ["mine"])      # short item, whole
    assert d("北京大学图书馆今天下午开放") == (None, [])                       # 12 shared characters
    assert d("查看我的借呗额度") == (None, [])                                 # part of a short item
    flag = decontam.Decontaminator({"project_sets": False, "eval_sets": [ev], "action": "flag"})
    assert flag("请问怎么查看我的借呗额度呢") == (None, ["mine"])


def test_latin_words_and_digit_runs_are_one_character():
    assert len(decontam.normalize("international")) == 1
    assert len(decontam.normalize("1111111111111111")) == 1
    assert decontam.normalize("Ｗｉｎｄｏｗｓ 2000，是") == decontam.normalize("windows2000是")


def test_rolling_hash_is_position_free():
    import numpy as np

    from pipeline.charhash import codepoints, prefix_sums, span_hashes
    text = "天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏"
    p = prefix_sums(codepoints(text))
    h = span_hashes(p, np.arange(len(text) - 12), 13)
    assert (span_hashes(prefix_sums(codepoints(text[5:])), np.arange(len(text) - 17), 13) == h[5:]).all()
    assert span_hashes(prefix_sums(codepoints(text[2:15])), np.array([0]), 13)[0] == h[2]
    assert len(set(h.tolist())) == len(h)


def test_missing_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("ZH_SHARED_DATA", str(tmp_path / "nowhere"))
    index = decontam.build_index({})
    assert index.missing == ["sts-atec", "sts-bq", "sts-lcqmc", "sts-pawsx", "sts-sts-b", "csl-test", "cmrc2018-dev"]
    with pytest.raises(ConfigError, match="'extra': no file matches"):
        decontam.build_index({"eval_sets": [{"name": "extra", "path": str(tmp_path / "x.tsv")}]})
    assert decontam.build_index({"enabled": False}) is None


def test_the_index_is_cached_by_content_and_rebuilt_when_anything_differs(tmp_path, monkeypatch, caplog):
    """A second build loads the cached index (same tables, same matches); another file content, another
    ngram, a damaged cache file or ZH_PRETRAIN_CACHE=off each build it anew."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ZH_PRETRAIN_CACHE", str(cache))
    ev = _user_set(tmp_path, ["北京大学图书馆今天下午举办了一场传统手工艺讲座，吸引了很多市民。", "怎么查看我的借呗额度"])
    cfg = {"project_sets": False, "eval_sets": [ev]}
    docs = ["新闻：北京大学图书馆 今天下午，举办了一场传统手工艺讲座！", "请问怎么查看我的借呗额度呢", "北京大学图书馆今天下午开放"]
    built = decontam.build_index(cfg)
    files = sorted((cache / "decontam").iterdir())
    assert len(files) == 1
    loaded = decontam.build_index(cfg)
    assert loaded.short == built.short and loaded.items == built.items and loaded.names == built.names
    assert (loaded.ngrams.table.keys == built.ngrams.table.keys).all()
    assert loaded.masks(docs, 13) == built.masks(docs, 13) == [1, 1, 0]

    decontam.build_index({**cfg, "ngram": 12})                                  # other parameters
    (tmp_path / "mine.txt").write_text("怎么查看我的花呗额度\n", encoding="utf-8")  # other contents, same name
    other = decontam.build_index(cfg)
    assert other.masks(docs, 13) == [0, 0, 0] and len(list((cache / "decontam").iterdir())) == 3

    (tmp_path / "mine.txt").write_text("怎么查看我的借呗额度\n", encoding="utf-8")
    c = decontam.section(decontam.DecontamConfig, cfg)
    path = cache / "decontam" / f"index-{decontam.index_key(c, decontam.eval_sets(c))[:32]}.npz"
    path.write_bytes(b"not an npz")
    with caplog.at_level("WARNING"):
        assert decontam.build_index(cfg).masks(docs, 13) == [0, 1, 0]
    assert "unreadable" in caplog.text and path.stat().st_size > 100        # rebuilt and rewritten

    monkeypatch.setenv("ZH_PRETRAIN_CACHE", "off")
    off = tmp_path / "off"
    monkeypatch.setenv("XDG_CACHE_HOME", str(off))
    assert decontam.build_index(cfg).masks(docs, 13) == [0, 1, 0] and not off.exists()
    monkeypatch.setenv("ZH_PRETRAIN_CACHE", "/proc/no-such-cache")               # cannot be written: no cache
    assert decontam.build_index(cfg).masks(docs, 13) == [0, 1, 0]


@pytest.mark.slow
def test_project_sets_on_real_data(shared_data):
    """CSL abstracts in FewCLUE's csldcp overlap the CSL title test set; an STS test sentence
    pasted into a review is found; news is clean."""
    import json
    d = decontam.Decontaminator({})
    assert not d.index.missing and d.index.items["cmrc2018-dev"] > 3000
    row = (shared_data / "sts/senteval_cn/LCQMC/LCQMC.test.data").read_text(encoding="utf-8").splitlines()[1]
    assert d("这家店不错。" + row.split("\t")[0] + "下次还来。")[0] == "decontam_sts-lcqmc"
    abstracts = [json.loads(line)["content"] for line in
                 (shared_data / "corpus/fewclue/csldcp_test_public.json").open(encoding="utf-8")]
    assert sum(d(a)[1] == ["csl-test"] for a in abstracts) >= 5
    news = [line.split("\t", 1)[1] for line in
            (shared_data / "corpus/thucnews_cnews_subset/cnews.val.txt").open(encoding="utf-8")][:300]
    assert sum(bool(d(t)[1]) for t in news) <= 1
