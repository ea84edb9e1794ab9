"""Cleaning steps on Chinese examples (pure functions, no runner)."""

import csv
import os
from pathlib import Path

import pytest

from pipeline import clean
from pipeline.config import CleanConfig

SHARED = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))
WEIBO = SHARED / "corpus/weibo_senti_subset/weibo_senti_100k_subset.csv"


def test_nfkc_full_width_ascii_to_half_width():
    assert clean.normalize_unicode("ＡＢＣ１２３ｘｙｚ　手机") == "ABC123xyz 手机"


def test_nfkc_keeps_chinese_punctuation():
    text = "你好，世界！真的吗？是的；如下：（括号）“引号”‘单’、顿号……《书》【注】"
    assert clean.normalize_unicode(text) == text
    # but other compatibility forms are still folded
    assert clean.normalize_unicode("ﬁ①㎏") == "fi1kg"
    assert clean.normalize_unicode("，", keep_cjk_punctuation=False) == ","


def test_remove_control_and_zero_width():
    text = "中\u200b文\u200d字\ufeff符\x00串\x07\r\n第二行\u202e"
    assert clean.remove_control_chars(text) == "中文字符串\n第二行"


def test_strip_html_tags_and_entities():
    html = '<div class="c"><p>北京&nbsp;欢迎你</p><script>var x=1;</script><br/>第二段&amp;结尾<!-- 注释 --></div>'
    out = clean.collapse_whitespace(clean.strip_html(html))
    assert out == "北京欢迎你\n第二段&结尾"  # &nbsp; between CJK is dropped
    # escaped markup is unescaped, then stripped
    assert clean.strip_html("协议&lt;b&gt;核心&lt;/b&gt;内容") == "协议核心内容"
    # Chinese book-title marks and a lone "<" are not tags
    assert clean.strip_html("《红楼梦》里 3<5 的说法") == "《红楼梦》里 3<5 的说法"


def test_remove_urls_and_emails():
    text = "详情见 https://example.com/a?b=1 或 www.test.cn/x ，短链 t.cn/RXyz12 ，邮箱 foo.bar@mail.example.com 联系"
    out = clean.remove_emails(clean.remove_urls(text))
    assert "http" not in out and "www" not in out and "t.cn" not in out and "@" not in out
    assert out.startswith("详情见") and out.endswith("联系")
    assert clean.remove_urls("见https://a.cn/x。", replacement="<URL>") == "见<URL>。"
    # the quick test before the regex: every form needs "/" or "w." / "W."
    for url in ("WwW.Example.org", "http://localhost", "ftp://a", "x.com/abc", "bit.ly/", "wWw.a.cn"):
        text = f"看 {url} 好"
        assert clean.remove_urls(text) == clean._URL_RE.sub("", text) == "看  好", url


def test_mentions_hashtags_emoji():
    text = "@张晓鹏jonathan 土耳其的事[哈哈]//@丁丁看世界:很细心😀👍 #旅行# 好"
    out = clean.remove_mentions(text)
    assert "@" not in out and "张晓鹏" not in out and "丁丁看世界" not in out
    assert clean.handle_hashtags("#旅行#真好", "unwrap") == "旅行真好"
    assert clean.handle_hashtags("#旅行#真好", "remove") == "真好"
    assert clean.handle_emoji("开心😀👍[哈哈]！", "remove") == "开心！"
    assert clean.handle_emoji("开心😀", "keep") == "开心😀"
    for emoji in ("⭐", "©", "\U0001F9D1\u200d\U0001F4BB", "\U0001FC01", "\U000E0067", "⌚", "\u303D"):
        assert clean.handle_emoji(f"好{emoji}的", "remove") == "好的", ascii(emoji)
    assert clean.remove_mentions("找@小王", "replace") == "找@用户"


def test_collapse_whitespace_keeps_paragraphs():
    text = "  第一段  有  空格\t\t和tab \n\n\n   第二段\u3000开始 \n \n"
    assert clean.collapse_whitespace(clean.normalize_unicode(text)) == "第一段有空格和tab\n第二段开始"
    assert clean.collapse_whitespace("中 文 English words 混 合", remove_cjk_spaces=False) == "中 文 English words 混 合"


def test_traditional_to_simplified_examples():
    # phrase-aware OpenCC t2s: 髮→发 in 頭髮, 乾→干 in 乾燥 but not in 乾隆, 著作 kept
    text = "乾隆皇帝的頭髮很乾燥，後來他在臺灣的理髮店裏瞭解了《著作權法》。「一隻貓」"
    assert clean.to_simplified(text) == "乾隆皇帝的头发很干燥，后来他在台湾的理发店里了解了《著作权法》。「一只猫」"
    assert clean.to_simplified("计算机软件和頭髮") == "计算机软件和头发"  # simplified text untouched
    assert clean.to_simplified("軟體", config="tw2sp") == "软件"  # Taiwan vocabulary too
    off = clean.build_cleaner({"traditional_to_simplified": False})
    on = clean.build_cleaner({})
    assert off("漢語很難學。") == "漢語很難學。"
    assert on("ＡＢＣ漢語很難學！") == "ABC汉语很难学！"  # on by default: the vocabularies are simplified


def test_traditional_to_simplified_on_real_text(shared_data):
    import json

    to_s = clean.build_cleaner({})
    poems = json.loads((shared_data / "corpus/chinese_poetry/poet.tang.0.json").read_text(encoding="utf-8"))
    assert poems[0]["paragraphs"][0] == "秦川雄帝宅，函谷壯皇居。"
    assert to_s(poems[0]["paragraphs"][0]) == "秦川雄帝宅，函谷壮皇居。"
    assert to_s(poems[0]["paragraphs"][1]) == "绮殿千寻起，离宫百雉余。"
    poetry = "\n".join(line for poem in poems[:300] for line in poem["paragraphs"])
    converted = clean.to_simplified(poetry)
    assert len(converted) == len(poetry)  # character for character, nothing lost
    changed = sum(a != b for a, b in zip(poetry, converted))
    assert changed / len(poetry) > 0.05  # Tang poems are traditional
    assert clean.to_simplified(converted) == converted  # nothing traditional left
    for ch in "壯綺離雲風鳳龍門書東":
        assert ch not in converted, ch
    # Wikipedia dump: raw, mixed traditional/simplified articles
    wiki = [json.loads(line)["text"] for line in (shared_data / "corpus/zhwiki_sample/wiki_00_b.jsonl").open(encoding="utf-8")]
    docs = [to_s(t) for t in wiki[:100]]
    assert any(t.startswith("萬民福音部") for t in wiki[:100])
    assert any(t.startswith("万民福音部") for t in docs)
    changed = sum(a != b for t, d in zip(wiki, docs) for a, b in zip(t, clean.to_simplified(t)))
    left = sum(a != b for d in docs for a, b in zip(d, clean.to_simplified(d)))
    assert changed > 1000 and left <= 10  # left: OpenCC phrase "於戲" (=嗚呼) in "属於戏剧" on a 2nd pass
    # simplified news is left alone (< 0.1% of characters touched)
    news = [line.split("\t", 1)[1] for line in
            (shared_data / "corpus/thucnews_cnews_subset/cnews.val.txt").open(encoding="utf-8")][:200]
    touched = sum(a != b for t in news for a, b in zip(t, clean.to_simplified(t)))
    assert touched / sum(map(len, news)) < 0.001


def test_one_sentence_per_line():
    text = "他说：“今天天气很好。”我们去公园吧！真的吗？当然……好的；走吧\n第二段没有句号"
    assert clean.one_sentence_per_line(text) == "他说：“今天天气很好。”\n我们去公园吧！\n真的吗？\n当然……\n好的；\n走吧\n第二段没有句号"
    long = "这是一个很长的句子，" * 30 + "结束。"
    lines = clean.one_sentence_per_line(long, max_len=50).split("\n")
    assert max(map(len, lines)) <= 50 and "".join(lines) == long
    assert all(line.endswith("，") for line in lines[:-1])  # cut at the soft break
    cfg = {"split_sentences": True, "max_sentence_chars": 20}
    assert [n for n, _ in clean.cleaning_steps(cfg)][-1] == "one_sentence_per_line"
    out = clean.build_cleaner(cfg)("<p>第一句话。第二句话！</p><p>  第三句，" + "很长" * 20 + "。</p>")
    assert out.split("\n")[:2] == ["第一句话。", "第二句话！"] and max(map(len, out.split("\n"))) <= 20
    assert "\n" in clean.build_cleaner(CleanConfig())("第一句。\n第二句。")  # paragraphs kept ...
    assert clean.build_cleaner(CleanConfig())("第一句。第二句。") == "第一句。第二句。"  # ... off by default


def test_build_cleaner_order_and_switches():
    cleaner = clean.build_cleaner(CleanConfig())
    raw = "<p>ＯＰＰＯ手机\u200b真好用！！</p><p>详见http://x.cn/a @客服小李 😀</p>"
    assert cleaner(raw) == "OPPO手机真好用！！\n详见"
    off = clean.build_cleaner({"strip_html": False, "urls": "keep"})
    assert "<p>" in off(raw) and "http://x.cn/a" in off(raw)
    names = [n for n, _ in clean.cleaning_steps(CleanConfig())]
    assert names == [n for n in clean.STEP_ORDER if n in names]


@pytest.mark.skipif(not WEIBO.exists(), reason="shared Weibo data not available")
def test_real_weibo_text():
    cleaner = clean.build_cleaner(CleanConfig())
    with open(WEIBO, encoding="utf-8-sig", newline="") as f:
        rows = [r["review"] for r in csv.DictReader(f)]
    assert len(rows) > 1000
    with_mentions = [r for r in rows if "@" in r]
    with_urls = [r for r in rows if "http://" in r]
    with_emoticons = [r for r in rows if "[" in r and "]" in r]
    assert with_mentions and with_urls and with_emoticons
    for r in with_mentions + with_urls + with_emoticons:
        out = cleaner(r)
        assert "http" not in out, out
        assert "//@" not in out
        assert "\ufeff" not in out and "  " not in out
    # mentions are gone, the message stays
    assert cleaner("@张晓鹏jonathan 土耳其的事要认真对待[哈哈]，否则直接开除。") == "土耳其的事要认真对待，否则直接开除。"
    mention_left = sum("@" in cleaner(r) for r in with_mentions)
    assert mention_left / len(with_mentions) < 0.02


def test_one_default_per_key():
    """An empty section, the dataclass and configs/pipeline.yaml build the same cleaner."""
    import yaml

    from pipeline.config import REPO_CONFIG, load_config
    from pipeline.typed_config import ConfigError

    names = lambda cfg: [n for n, _ in clean.cleaning_steps(cfg)]  # noqa: E731
    assert names({}) == names(CleanConfig()) == names(load_config(str(REPO_CONFIG)).clean)
    raw = "<p>@小王 #话题# 今天😀天气好</p>"
    assert clean.build_cleaner({})(raw) == clean.build_cleaner(CleanConfig())(raw) == "话题今天天气好"
    shipped = yaml.safe_load(REPO_CONFIG.read_text(encoding="utf-8"))
    assert load_config(str(REPO_CONFIG)) == load_config(None), "configs/pipeline.yaml restates the defaults"
    assert set(shipped) == set(load_config(None).__dataclass_fields__)
    with pytest.raises(ConfigError, match="clean.emojii"):
        clean.build_cleaner({"emojii": "keep"})


def test_blank_markers_are_not_unwrapped_into_words(shared_data):
    """chid's #idiom# marks a blank; unwrapping it as a hashtag inserted the word "idiom"."""
    import json

    with (shared_data / "corpus/fewclue/chid_unlabeled.json").open(encoding="utf-8") as f:
        content = json.loads(f.readline())["content"]
    assert "#idiom#" in content
    cleaned = clean.build_cleaner({})(content)
    assert "#idiom#" in cleaned and "情,idiom。" not in cleaned and "事情,#idiom#。" in cleaned
    assert "idiom" not in clean.build_cleaner({"blank_policy": "remove"})(content)
    assert "事情,___。" in clean.build_cleaner({"blank_policy": "replace"})(content)
    # Weibo topics are still unwrapped
    assert clean.build_cleaner({})("#中国梦想秀#今晚播出") == "中国梦想秀今晚播出"


def test_private_use_characters_removed():
    assert clean.remove_private_use("汉\ue000字\U000f0001好\U0010fffd") == "汉字好"
    assert clean.build_cleaner({})("汉\ue5e5字") == "汉字"
    assert clean.build_cleaner({"remove_private_use": False})("汉\ue5e5字") == "汉\ue5e5字"


def test_empty_brackets_left_by_markup(shared_data):
    import json

    wiki = [json.loads(line)["text"] for line in
            (shared_data / "corpus/zhwiki_sample/wiki_00_b.jsonl").open(encoding="utf-8")]
    doc = next(t for t in wiki if "干宝（），字令升" in t)
    cleaned = clean.build_cleaner({})(doc)
    assert "干宝，字令升" in cleaned and "（）" not in cleaned
    before = sum(t.count("（）") + t.count("（，）") for t in wiki)
    after = sum(c.count("（）") + c.count("（，）") for c in map(clean.build_cleaner({}), wiki))
    assert before > 100 and after == 0
    assert clean.remove_empty_brackets("耶维齐·马尔可夫（，），生於著作《》里（1856年）") == "耶维齐·马尔可夫，生於著作里（1856年）"


def test_doubled_body_keeps_one_copy(shared_data):
    """34 of the 1,000 THUCNews articles are "title + body + body"; collapsed, they pass the
    repeated-n-gram filter that used to reject them whole. Short repeats are left alone, and no
    article that passed before changes."""
    from pipeline import filters

    body = "今年春茶品质明显好于往年，茶农们天不亮就上山采茶，收购价格也比去年略有上涨，全镇茶园面积约一万二千亩。"
    assert clean.collapse_doubled("青溪镇春茶开采" + body + body) == "青溪镇春茶开采" + body
    assert clean.collapse_doubled(body + "\n" + body + "\n" + body) == body           # three copies, newlines
    assert clean.collapse_doubled("\n".join([body] * 4)) == "\n".join([body] * 4)     # four: boilerplate, left whole
    refrain = "我们一起唱吧，我们一起唱吧！"
    song = body * 3 + "副歌：" + refrain + refrain
    assert clean.collapse_doubled(song) == song                                       # under half the text
    assert clean.collapse_doubled(body + "另一篇" + body) == body + "另一篇" + body   # not back to back
    plain = clean.build_cleaner({"collapse_doubled": False})
    rows = (shared_data / "corpus/thucnews_cnews_subset/cnews.val.txt").read_text(encoding="utf-8").splitlines()
    before = [plain(r.split("\t", 1)[1]) for r in rows]
    after = [clean.collapse_doubled(t) for t in before]
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(changed) >= 30, len(changed)
    assert all(filters.repeated_ngram_ratio(a) > 0.5 and filters.repeated_ngram_ratio(b) <= 0.5 for a, b in changed)


def test_opencc_triggers_skip_only_texts_opencc_keeps(shared_data):
    """The stored trigger sets are the installed OpenCC's, and a text without a trigger is one
    OpenCC leaves as it is: every other character alone, and the real documents of the shared
    corpora (traditional poetry and Wikipedia, simplified reviews and news)."""
    import json
    import shutil

    import opencc

    from pipeline import opencc_triggers, readers
    from pipeline.config import ReadConfig, as_dict

    if opencc_triggers.pattern("t2s") is None:
        pytest.skip("opencc_triggers.json is for another OpenCC version: python -m pipeline.opencc_triggers")
    store = json.loads(opencc_triggers.STORE.read_text(encoding="utf-8"))
    tool = Path(opencc.__file__).parent / "clib" / "bin" / "opencc_dict"
    if shutil.which(str(tool)):
        assert {c: opencc_triggers.triggers(c) for c in opencc_triggers.CONFIGS} == store["configs"]
    texts = []
    for name in ("chinese_poetry/poet.tang.0.json", "chinese_poetry/songci_300.json", "zhwiki_sample/wiki_00_a.jsonl",
                 "sophonplus_reviews/ChnSentiCorp_htl_all.csv", "weibo_senti_subset/weibo_senti_100k_subset.csv",
                 "thucnews_titles/dev.txt"):
        docs = [p[1] for kind, p in readers.read_source(str(shared_data / "corpus" / name), as_dict(ReadConfig()))
                if kind == "doc"]
        texts += docs[:3000]
    assert len(texts) > 5000
    for config in opencc_triggers.CONFIGS:
        found = opencc_triggers.pattern(config)
        converter = opencc.OpenCC(config)
        plain = "\n".join(chr(c) for c in range(0x80, 0x30000) if not 0xD800 <= c < 0xE000 and not found.search(chr(c)))
        assert converter.convert(plain) == plain, config
        skipped = [t for t in texts if not found.search(t)]
        assert 0 < len(skipped) and all(converter.convert(t) == t for t in skipped), config
        assert clean.to_simplified("頭髮乾燥，深沈", config) == converter.convert("頭髮乾燥，深沈")


def test_opencc_triggers_of_another_version_convert_every_text(monkeypatch):
    """Sets made for another OpenCC version are not used: every text goes through OpenCC."""
    from pipeline import opencc_triggers

    monkeypatch.setattr(opencc_triggers, "_opencc_version", lambda: "0.0-other")
    opencc_triggers.pattern.cache_clear()
    try:
        assert opencc_triggers.pattern("t2s") is None
        assert clean.to_simplified("頭髮乾燥") == "头发干燥"
    finally:
        monkeypatch.undo()
        opencc_triggers.pattern.cache_clear()
