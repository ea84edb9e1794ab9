"""Quality filters: each returns its named reject reason or None."""

from pipeline import filters

GOOD = "今天天气很好，我们一起去公园散步，看到了很多盛开的花朵和在湖边嬉戏的小朋友。"


def test_length():
    assert filters.length_filter("好评！", min_chars=10) == "too_short"
    assert filters.length_filter(GOOD, min_chars=10) is None
    assert filters.length_filter(GOOD * 10, max_chars=100) == "too_long"
    # whitespace does not count
    assert filters.length_filter("好 \n 好 \n 好", min_chars=4) == "too_short"


def test_default_minimum_keeps_short_posts(shared_data):
    """Weibo posts of 4-9 characters after cleaning (emoticon codes, mentions and retweet chains
    removed) are real text; 1-3 characters are residue. 410 of 2,400 posts were too_short at the
    old 10-character minimum; bench/length_bench.py labels 176 short records from every source."""
    import csv

    from pipeline import clean

    fs = filters.build_filters({})
    assert filters.first_failure("不敢相信", fs) is None
    assert filters.first_failure("味道巴适", fs) is None
    assert filters.first_failure("好评！", fs) == "too_short"
    assert filters.first_failure("转", fs) == "too_short"
    cleaner = clean.build_cleaner({})
    with open(shared_data / "corpus/weibo_senti_subset/weibo_senti_100k_subset.csv", encoding="utf-8") as fh:
        posts = [row["review"] for row in csv.DictReader(fh)]
    short = sum(filters.length_filter(cleaner(p)) == "too_short" for p in posts)
    assert len(posts) == 2400 and short <= 120, short


def test_chinese_ratio():
    assert filters.chinese_ratio_filter("This is an English sentence with 中文 words.") == "low_chinese_ratio"
    assert filters.chinese_ratio_filter(GOOD) is None
    assert filters.chinese_ratio("中文ab") == 0.5
    # a punctuation run counts as one character: emphasis, not a text without Chinese
    assert filters.chinese_ratio("满意！！！！！！！") == 2 / 3
    assert filters.chinese_ratio_filter("物流很快" + "。" * 30) is None
    assert filters.chinese_ratio_filter("ok!!!!!!!! 好") == "low_chinese_ratio"
    assert filters.chinese_ratio("！！！") == 0.0


def test_punctuation_and_digits():
    # runs of punctuation and whole numbers are one unit each
    assert filters.punctuation_filter("满意。。。。。。。。。。。。") is None          # an emphatic review
    assert filters.punctuation_filter("★☆★☆ ◆ ◇ ◆ ※※ →_→ ～ ～ ♪ ♪ 好") == "too_much_punctuation"
    assert filters.punctuation_filter(GOOD) is None
    assert filters.digit_filter("电话 13541059047 13912345678 15012345678 18812345678") == "too_many_digits"
    assert filters.digit_filter("1 100 2 200 3 300 4 400 5 500 合计") == "too_many_digits"
    assert filters.digit_filter("2024年3月16日，南屏市春季大型招聘会在市会展中心举行，参会企业很多") is None
    assert filters.digit_filter("通州8哩岛3-4居准现房均价19500元享97折") is None
    assert filters.digit_ratio("均价19500元") == 1 / 4


def test_mojibake():
    assert filters.mojibake_filter("每次失眠都?想起?去的得?失。") == "mojibake"
    assert filters.mojibake_filter("男：您要回公司?女：是，有什么事情吗?") is None    # half-width question marks
    assert filters.mojibake_filter("很喜欢，很好用??????") is None                       # emphasis
    assert filters.mojibake_ratio("宏\ufffd和戴尔") == 1 / 5


def test_headlines_and_reviews_kept(shared_data):
    """603 of 10,000 THUCNews headlines with prices and dates were rejected as too_many_digits."""
    from pipeline import clean

    cleaner, fs = clean.build_cleaner({}), filters.build_filters({})
    names = ("digits", "punctuation", "mojibake")
    ratio = [f for f in fs if f[0] in names]
    lines = (shared_data / "corpus/thucnews_titles/test.txt").read_text(encoding="utf-8").splitlines()
    rejected = sum(filters.first_failure(cleaner(line.split("\t")[0]), ratio) is not None for line in lines)
    assert len(lines) == 10000 and rejected <= 5, rejected


def test_punctuation_runs_are_emphasis_not_repeats():
    """A run of one punctuation mark is a run of identical n-grams; counted once, an emphatic
    review passes, and copy-pasted or padded text is still caught."""
    assert filters.repeated_ngrams_filter("不错，送货速度快，值得购买" + "！" * 30) is None
    assert filters.repeated_ngrams_filter("物流很慢" + "。" * 40 + "客服也不回复" + "." * 20) is None
    assert filters.repeated_ngrams_filter("送礼自用都不错，值得推荐！" * 4) == "repeated_ngrams"
    assert filters.repeated_ngrams_filter("贵了点。" + "20字" * 12) == "repeated_ngrams"
    assert filters.repeated_ngram_ratio("!" * 40) == filters.repeated_ngram_ratio("")   # a run alone: nothing left


def test_repeated_lines():
    boiler = "\n".join(["本词条由网友编辑，仅供参考。"] * 5 + ["火山是地下岩浆冲出地表形成的。"])
    assert filters.repeated_lines_filter(boiler) == "repeated_lines"
    assert filters.repeated_lines_filter(GOOD + "\n" + GOOD[::-1]) is None


def test_repeated_ngrams_short_and_long_paths():
    spam = "【限时特惠】关注店铺领取五元红包！" * 4
    assert filters.repeated_ngrams_filter(spam) == "repeated_ngrams"
    assert filters.repeated_ngrams_filter(spam * 20) == "repeated_ngrams"
    assert filters.repeated_ngrams_filter(GOOD) is None
    long_text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(2000))
    assert filters.repeated_ngram_ratio(long_text) == 0.0
    mixed = GOOD + "点击关注获取更多资讯点击关注获取更多资讯" + GOOD[::-1]
    assert 0 < filters.repeated_ngram_ratio(mixed) < 1


def _covered_share(text: str, n: int) -> float:
    """The definition, with Python strings: characters under an n-gram that occurs twice."""
    if len(text) < 2 * n:
        return 0.0
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    seen = {g: grams.count(g) for g in set(grams)}
    covered = [False] * len(text)
    for i, g in enumerate(grams):
        if seen[g] > 1:
            covered[i : i + n] = [True] * n
    return sum(covered) / len(text)


def test_batch_repeated_ngram_ratios_equal_the_definition():
    """One batch (empty, short, with repeats at the edges, a punctuation run, two documents that
    share n-grams with each other but repeat none inside) gives each text its own ratio."""
    texts = ["", "好", GOOD, "点击关注获取更多资讯" * 3, "ab" + "点击关注获取更多资讯" * 2, "关注 点击\n关注点击关注点击" * 3,
             "不错，送货速度快，值得购买" + "！" * 30, GOOD, GOOD + GOOD[:12], "a" * 25]
    got = filters.repeated_ngram_ratios(texts, 10)
    for text, ratio in zip(texts, got):
        stripped = "".join(text.split())
        want = _covered_share(stripped, 10)
        runs = filters._PUNCT_RUN.sub(r"\1", stripped)
        if want > 0 and len(runs) < len(stripped):
            want = min(want, _covered_share(runs, 10))
        assert abs(ratio - want) < 1e-12, text
        assert filters.repeated_ngram_ratio(text) == ratio
    assert got[2] == got[7] == 0.0           # the same text twice in a batch is no repeat inside either


def test_build_filters_and_switch_off():
    fs = filters.build_filters({})
    assert filters.first_failure("好", fs) == "too_short"
    assert filters.first_failure(GOOD, fs) is None
    names = [n for n, _ in filters.build_filters({"min_chinese_ratio": None})]
    assert "chinese_ratio" not in names


def test_batch_decisions_equal_one_text_decisions(shared_data):
    """``first_failures`` (length and ratio filters in numpy over the batch) names the same
    filter as ``first_failure`` text by text: real reviews and headlines, and the edge cases of
    number separators, punctuation runs and text boundaries."""
    from pipeline.clean import build_cleaner

    cleaner = build_cleaner()
    path = shared_data / "corpus/thucnews_cnews_subset/cnews.val.txt"
    texts = [cleaner(line.split("\t", 1)[-1][:400]) for line in path.read_text(encoding="utf-8").splitlines()[:1500]]
    texts += ["", "好", "1.2.3 ab", "？？？", "。。好", "3-4居 19500元", "价格1,000.5元-2", "1.", ".1", "12:30", "！",
              "a b\tc\n", "中文" * 40 + "？" * 30, "9" * 30, "??好??", "每次失眠都?想起?去的得?失"]
    fs = filters.build_filters({"min_chars": 5, "max_digit_ratio": 0.2, "max_punctuation_ratio": 0.2})
    expected = [filters.first_failure(t, fs) for t in texts]
    assert filters.first_failures(texts, fs) == expected
    assert filters.first_failures(texts[::-1], fs) == expected[::-1]
    assert len({r for r in expected if r}) >= 4
