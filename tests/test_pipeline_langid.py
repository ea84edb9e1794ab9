"""Language ID: classical and code-mixed Chinese kept, other languages rejected with their code."""
from pipeline.langid import LanguageIdentifier


def test_keeps_chinese_in_every_register():
    ident = LanguageIdentifier({})
    for text in ("学而时习之，不亦说乎？有朋自远方来，不亦乐乎？人不知而不愠，不亦君子乎？",
                 "這款手機的電池續航很不錯，充一次電可以用兩天，拍照效果也很好。",
                 "这个bug我查了一下午，最后发现是config文件里少了一个逗号，真是太坑了。"):
        kept, lang, score = ident.keep(text)
        assert kept and lang in ("zh", "un"), (text, lang, score)


def test_rejects_other_languages_with_code_and_score():
    ident = LanguageIdentifier({})
    ja = "明日の会議は午後三時からに変更になりましたので、よろしくお願いします。資料は事前に送ります。"
    en = "The meeting has been moved to Thursday afternoon because the projector in room four is broken."
    assert ident.reason(ja) == "lang_ja"
    assert ident.reason(en) == "lang_en"
    kept, lang, score = ident.keep(en)
    assert not kept and lang == "en" and score >= 0.9
    assert LanguageIdentifier({"languages": ["zh", "en"]}).reason(en) is None
    assert LanguageIdentifier({"enabled": False}).keep(ja)[0]
    assert LanguageIdentifier({}).reason("Hello there.") is None     # too short to judge


def test_real_text(shared_data):
    """Tang poems (traditional, classical) are kept; the English song lyrics inside a Chinese
    Wikipedia dump are rejected."""
    import json
    ident = LanguageIdentifier({})
    poems = json.loads((shared_data / "corpus/chinese_poetry/poet.tang.0.json").read_text(encoding="utf-8"))
    texts = ["".join(p["paragraphs"]) for p in poems[:200]]
    assert sum(ident.reason(t) is None for t in texts) == len(texts)
    wiki = [json.loads(line)["text"] for line in
            (shared_data / "corpus/zhwiki_sample/wiki_00_b.jsonl").open(encoding="utf-8")]
    lyrics = next(t for t in wiki if "Disorder and confusion everywhere" in t)
    block = lyrics[lyrics.index("Disorder and confusion everywhere"):][:400]
    assert ident.reason(block) == "lang_en"
