"""Word-list filters: one Aho-Corasick automaton, per-list hit thresholds, user lists."""
import pytest

from pipeline.typed_config import ConfigError
from pipeline.wordlists import WordlistMatcher, covered, read_terms

NEWS = "警方近日破获一起利用网上赌场诈骗的案件，涉案人员已被刑事拘留，案件正在进一步审理之中。"


def test_builtin_lists_reject_ads_not_news():
    m = WordlistMatcher.from_config({})
    assert m.names == ["porn", "gambling", "ads", "spam"]
    ad = "澳门赌场真人荷官在线发牌，百家乐、时时彩应有尽有，注册送彩金，加VX了解详情！"
    assert m.reason(ad) == "wordlist_gambling"
    assert m.reason(NEWS) is None          # one mention in a report is not an advert
    hits, cov = m.scores(ad)[1]
    assert hits >= 4 and cov >= len("澳门赌场真人荷官百家乐时时彩彩金")


def test_user_list_case_insensitive_and_thresholds(tmp_path):
    path = tmp_path / "block.txt"
    path.write_text("# comment\n代开发票\nVX\n", encoding="utf-8")
    m = WordlistMatcher.from_config({"lists": [{"name": "invoice", "path": str(path), "min_hits": 1, "max_ratio": 0.0}]})
    assert m.reason("专业代开发票，联系我们，价格优惠") == "wordlist_invoice"
    assert m.reason("加vx领取") == "wordlist_invoice"
    assert m.reason(NEWS) is None
    strict = WordlistMatcher.from_config({"lists": [{"name": "invoice", "path": str(path), "min_hits": 2}]})
    assert strict.reason("专业代开发票，联系我们，价格优惠") is None


def test_overlapping_terms_counted_once():
    assert covered([(0, 4), (2, 6), (10, 12)]) == 8
    assert read_terms("# c\n A \n\nb\nA\n") == ["a", "b"]


def test_errors_name_the_list(tmp_path):
    with pytest.raises(ConfigError, match="no built-in list 'drugs'"):
        WordlistMatcher.from_config({"lists": [{"name": "drugs"}]})
    with pytest.raises(ConfigError, match=r"wordlists.mine: cannot read"):
        WordlistMatcher.from_config({"lists": [{"name": "mine", "path": str(tmp_path / "nope.txt")}]})
    with pytest.raises(ConfigError, match=r"wordlists.lists\[0\].max_hits"):
        WordlistMatcher.from_config({"lists": [{"name": "porn", "max_hits": 1}]})
    assert WordlistMatcher.from_config({"enabled": False}) is None


def test_real_corpora_rarely_hit(shared_data):
    """On the review, news and encyclopedia corpora the default lists reject almost nothing."""
    import csv
    m = WordlistMatcher.from_config({})
    with (shared_data / "corpus/sophonplus_reviews/ChnSentiCorp_htl_all.csv").open(encoding="utf-8") as f:
        reviews = [r["review"] for r in csv.DictReader(f) if r["review"]]
    news = [line.split("\t", 1)[1] for line in
            (shared_data / "corpus/thucnews_cnews_subset/cnews.val.txt").open(encoding="utf-8")]
    rejected = sum(m.reason(t) is not None for t in reviews + news)
    assert rejected <= 2, rejected
