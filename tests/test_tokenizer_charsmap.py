"""The charsmap + NFC normalizer is the pipeline's Unicode step, character by character."""

from __future__ import annotations

import pytest
from tokenizers import normalizers

from tokenizer.charsmap import charsmap_rules, precompiled_charsmap
from tokenizer.normalize import SPACE_MARK, normalize


@pytest.fixture(scope="module")
def unicode_step():
    return normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap()), normalizers.NFC()])


def test_every_code_point_matches_python(unicode_step):
    """All 1.1M code points, one at a time: Rust charsmap + NFC == Python NFKC keeping ，！？…."""
    diffs = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        if unicode_step.normalize_str(c) != normalize(c, lowercase=False):
            diffs.append(hex(cp))
    assert diffs == []


def test_compositions_and_protected_punctuation(unicode_step):
    # decomposed input composes; half-width katakana + voiced mark (6-byte cluster) composes;
    # compatibility ideographs, ligatures, circled digits, full-width forms fold;
    # ，！？；：（）…～ stay; their NFKC placeholders come back as punctuation; ▁ is a space
    texts = [
        "e\u0301 A\u030a \u212b \u1100\u1161\u11a8",
        "ｶﾞｷﾞ ﬁ ① ㎏ \uf900 ＡＢＣ１２３",
        "，！？；：（）…～ ,!?;:()...~ ﹐﹑",
        "\ufdd0\ufdd8 ▁a▁▁b",
        "北京是中国的首都，也是一座历史悠久的城市。",
    ]
    for text in texts:
        assert unicode_step.normalize_str(text) == normalize(text, lowercase=False), text
    assert unicode_step.normalize_str("ｶﾞ，ﬁ") == "ガ，fi"


def test_rules_are_compatibility_mappings_only():
    rules = charsmap_rules()
    assert rules[SPACE_MARK] == " " and rules["\ufdd0"] == "，"
    assert "，" not in rules and "…" not in rules  # protected: NFKC would fold them
    assert "é" not in rules and "\uf900" not in rules  # canonical only: NFC handles them
    assert rules["Ａ"] == "A" and rules["ﬁ"] == "fi"
