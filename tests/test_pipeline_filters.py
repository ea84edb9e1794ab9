"""Quality filters: each returns its named reject reason or None."""

from pipeline import filters

GOOD = "今天天气很好，我们一起去公园散步，看到了很多盛开的花朵和在湖边嬉戏的小朋友。"


def test_length():
    assert filters.length_filter("好评！", min_chars=10) == "too_short"
    assert filters.length_filter(GOOD, min_chars=10) is None
    assert filters.length_filter(GOOD * 10, max_chars=100) == "too_long"
    # whitespace does not count
    assert filters.length_filter("好 \n 好 \n 好", min_chars=4) == "too_short"


def test_chinese_ratio():
    assert filters.chinese_ratio_filter("This is an English sentence with 中文 words.") == "low_chinese_ratio"
    assert filters.chinese_ratio_filter(GOOD) is None
    assert filters.chinese_ratio("中文ab") == 0.5


def test_punctuation_and_digits():
    assert filters.punctuation_filter("满意。。。。。。。。。。。。") == "too_much_punctuation"
    assert filters.punctuation_filter(GOOD) is None
    assert filters.digit_filter("电话13541059047，QQ2533056233") == "too_many_digits"
    assert filters.digit_filter("2024年3月16日，南屏市春季大型招聘会在市会展中心举行，参会企业很多") is None


def test_repeated_lines():
    boiler = "\n".join(["本词条由网友编辑，仅供参考。"] * 5 + ["火山是地下岩浆冲出地表形成的。"])
    assert filters.repeated_lines_filter(boiler) == "repeated_lines"
    assert filters.repeated_lines_filter(GOOD + "\n" + GOOD[::-1]) is None


def test_repeated_ngrams_short_and_long_paths():
    spam = "【限时特惠】关注店铺领取五元红包！" * 4
    assert filters.repeated_ngrams_filter(spam) == "repeated_ngrams"
    assert filters.repeated_ngrams_filter(spam * 20) == "repeated_ngrams"  # numpy path (>300 chars)
    assert filters.repeated_ngrams_filter(GOOD) is None
    long_text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(2000))
    assert filters.repeated_ngram_ratio(long_text) == 0.0
    # both code paths agree
    mixed = GOOD + "点击关注获取更多资讯点击关注获取更多资讯" + GOOD[::-1]
    short = filters.repeated_ngram_ratio(mixed)
    assert 0 < short < 1
    assert abs(short - filters.repeated_ngram_ratio(mixed * 1)) < 1e-9


def test_build_filters_and_switch_off():
    fs = filters.build_filters({})
    assert filters.first_failure("好", fs) == "too_short"
    assert filters.first_failure(GOOD, fs) is None
    names = [n for n, _ in filters.build_filters({"min_chinese_ratio": None})]
    assert "chinese_ratio" not in names
