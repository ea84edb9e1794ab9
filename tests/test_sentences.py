"""Sentence splitting: boundaries, attached closers, long-sentence cuts, and
the preservation invariant (only whitespace between sentences is dropped)."""

import random

import pytest

from pipeline.sentences import CLOSERS, TERMINATORS, split_sentences


def assert_preserves(text: str, sentences: list[str]) -> None:
    """text == w0 + s1 + w1 + ... + sn + wn with every wi whitespace-only."""
    pos = 0
    for s in sentences:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        assert text.startswith(s, pos), (text, sentences, pos)
        pos += len(s)
    assert text[pos:].strip() == ""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("今天天气很好。我们去公园吧！你来吗？", ["今天天气很好。", "我们去公园吧！", "你来吗？"]),
        ("他说：“我来了。”然后走了。", ["他说：“我来了。”", "然后走了。"]),
        ("「好吧！」她笑了。", ["「好吧！」", "她笑了。"]),
        ("他想了想……还是算了。", ["他想了想……", "还是算了。"]),
        ("真的吗？！不会吧。", ["真的吗？！", "不会吧。"]),
        ("先做这个；再做那个", ["先做这个；", "再做那个"]),
        ("Hi! 你好; ok?", ["Hi!", "你好;", "ok?"]),
        ("第一段没有句号\n\u3000\u3000第二段。\n\n", ["第一段没有句号", "第二段。"]),
        ("New York 很大。 价格是3.5元。", ["New York 很大。", "价格是3.5元。"]),
        ("（注：见上文。）后文。", ["（注：见上文。）", "后文。"]),
        ("。。开头就是句号", ["。。", "开头就是句号"]),
        ("", []),
        (" \n\u3000\n", []),
    ],
)
def test_examples(text, expected):
    sentences = split_sentences(text)
    assert sentences == expected
    assert_preserves(text, sentences)


def test_long_sentence_cut_at_soft_breaks():
    text = "第一部分很长，第二部分也很长、第三部分更长，最后结束。"
    sentences = split_sentences(text, max_len=8)
    assert sentences == ["第一部分很长，", "第二部分也很长、", "第三部分更长，", "最后结束。"]
    assert_preserves(text, sentences)


def test_long_sentence_hard_cut_without_soft_breaks():
    assert split_sentences("一" * 10, max_len=4) == ["一一一一", "一一一一", "一一"]


def test_rejects_bad_max_len():
    with pytest.raises(ValueError):
        split_sentences("你好。", max_len=0)


def test_random_texts_keep_invariants():
    alphabet = "我你他好的是了" + TERMINATORS + CLOSERS + "，、 \n\u3000ab"
    rnd = random.Random(1234)
    for _ in range(500):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 80)))
        max_len = rnd.randint(1, 12)
        sentences = split_sentences(text, max_len=max_len)
        assert all(s and s == s.strip() and len(s) <= max_len for s in sentences)
        assert_preserves(text, sentences)
        assert "".join("".join(sentences).split()) == "".join(text.split())
