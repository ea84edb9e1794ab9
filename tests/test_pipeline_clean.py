"""Cleaning steps on Chinese examples (pure functions, no runner)."""

import csv
import os
from pathlib import Path

import pytest

from pipeline import clean
from pipeline.config import DEFAULTS

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


def test_mentions_hashtags_emoji():
    text = "@张晓鹏jonathan 土耳其的事[哈哈]//@丁丁看世界:很细心😀👍 #旅行# 好"
    out = clean.remove_mentions(text)
    assert "@" not in out and "张晓鹏" not in out and "丁丁看世界" not in out
    assert clean.handle_hashtags("#旅行#真好", "unwrap") == "旅行真好"
    assert clean.handle_hashtags("#旅行#真好", "remove") == "真好"
    assert clean.handle_emoji("开心😀👍[哈哈]！", "remove") == "开心！"
    assert clean.handle_emoji("开心😀", "keep") == "开心😀"
    assert clean.remove_mentions("找@小王", "replace") == "找@用户"


def test_collapse_whitespace_keeps_paragraphs():
    text = "  第一段  有  空格\t\t和tab \n\n\n   第二段\u3000开始 \n \n"
    assert clean.collapse_whitespace(clean.normalize_unicode(text)) == "第一段有空格和tab\n第二段开始"
    assert clean.collapse_whitespace("中 文 English words 混 合", remove_cjk_spaces=False) == "中 文 English words 混 合"


def test_traditional_to_simplified_optional():
    out = clean.to_simplified("漢語")
    if clean.opencc_available():
        assert out == "汉语"
    else:
        assert out == "漢語"


def test_build_cleaner_order_and_switches():
    cleaner = clean.build_cleaner(DEFAULTS["clean"])
    raw = "<p>ＯＰＰＯ手机\u200b真好用！！</p><p>详见http://x.cn/a @客服小李 😀</p>"
    assert cleaner(raw) == "OPPO手机真好用！！\n详见"
    off = clean.build_cleaner({**DEFAULTS["clean"], "strip_html": False, "urls": "keep"})
    assert "<p>" in off(raw) and "http://x.cn/a" in off(raw)
    names = [n for n, _ in clean.cleaning_steps(DEFAULTS["clean"])]
    assert names == [n for n in clean.STEP_ORDER if n in names]


@pytest.mark.skipif(not WEIBO.exists(), reason="shared Weibo data not available")
def test_real_weibo_text():
    cleaner = clean.build_cleaner(DEFAULTS["clean"])
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
