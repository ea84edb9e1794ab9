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


def test_han_only_text_is_not_japanese():
    """CLD2 calls some Chinese headlines Japanese; without kana they are Chinese. Japanese with
    kana, Korean with Hangul are still rejected; a katakana middle dot is not kana."""
    from pipeline import langid

    ident = LanguageIdentifier({})
    headline = "湖北文科双料状元：享受“追”一位女生的感觉"
    assert langid.pycld2.detect(headline)[2][0][1] == "ja"        # what CLD2 says on its own
    assert ident.keep(headline) == (True, "zh", ident.top(headline)[1])
    assert not langid.script_allows("ja", "迈克尔・杰克逊的演唱会门票一小时内售罄了")
    assert langid.script_allows("ja", "明日の会議は午後三時からに変更になりました")
    assert langid.script_allows("ko", "내일 회의는 오후 세 시로 변경되었습니다") and langid.script_allows("en", "中文")
    ko = "내일 회의는 오후 세 시로 변경되었습니다. 자료는 미리 보내 드리겠습니다. 감사합니다."
    assert ident.reason(ko) == "lang_ko"


def test_real_text(shared_data):
    """Tang poems (traditional, classical) are kept; the English song lyrics inside a Chinese
    Wikipedia dump are rejected; THUCNews headlines CLD2 calls Japanese are kept."""
    import json

    from pipeline import langid
    ident = LanguageIdentifier({})
    poems = json.loads((shared_data / "corpus/chinese_poetry/poet.tang.0.json").read_text(encoding="utf-8"))
    texts = ["".join(p["paragraphs"]) for p in poems[:200]]
    assert sum(ident.reason(t) is None for t in texts) == len(texts)
    wiki = [json.loads(line)["text"] for line in
            (shared_data / "corpus/zhwiki_sample/wiki_00_b.jsonl").open(encoding="utf-8")]
    lyrics = next(t for t in wiki if "Disorder and confusion everywhere" in t)
    block = lyrics[lyrics.index("Disorder and confusion everywhere"):][:400]
    assert ident.reason(block) == "lang_en"
    titles = [line.split("\t")[0] for line in
              (shared_data / "corpus/thucnews_titles/test.txt").read_text(encoding="utf-8").splitlines()]
    long_enough = [t for t in titles if len(t) >= ident.min_chars]
    cld2_ja = sum(langid.pycld2.detect(t)[2][0][1] == "ja" for t in long_enough)
    assert cld2_ja >= 5 and sum(ident.reason(t) == "lang_ja" for t in long_enough) == 0, cld2_ja
