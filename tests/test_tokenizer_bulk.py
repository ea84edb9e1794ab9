"""tokenizer.bulk: SentencePiece's Viterbi gives tokenizer.json's ids."""

from __future__ import annotations

import json

import pytest

from tokenizer.bulk import BOUNDARY, MODEL_FILE, POISON, BulkEncoder, char_table
from tokenizer.normalize import SPACE_MARK, mark_spaces, normalize, pieces

from test_tokenizer_build import CHECK, MIXED, SENTENCES, built, fast  # noqa: F401  (fixtures)

EDGE = [
    "  hello   world\t\n42 号",  # whitespace runs, before and after ASCII
    "中 国 人\u3000民",  # a space between ideographs cuts the word
    "ＡＢＣ　ｄｅｆ①②，Ｈｅｌｌｏ",  # full-width forms, ideographic space before a full-width letter
    "\u00a0x \u2003y\u2028z",  # exotic spaces before letters
    "龘靐齉 😀😀 ★★",  # unknown characters: consecutive ones fuse into one [UNK]
    "café cafe\u0301 ΑΣ Σ",  # decomposed accent, final sigma: routed to tokenizer.json
    "前[MASK]后 <extra_id_3> [mask]",  # literal specials: routed
    "a▁b ▁你",  # the space marker typed in the text: routed
    "\u1100\u1161\u11a8 한국어",  # Hangul jamo compose: routed
    "²\ufe0f µ\u200d ①\u20e3",  # grapheme extenders after a compatibility character: routed
    "",
    " ",
    "\n\n\n",
]


@pytest.fixture(scope="module")
def bulk(built):  # noqa: F811
    return BulkEncoder(built[0] / "out")


def test_build_writes_the_model(built):  # noqa: F811
    assert (built[0] / "out" / MODEL_FILE).stat().st_size > 0


def test_same_ids_as_tokenizer_json(bulk, fast):  # noqa: F811
    texts = CHECK + EDGE
    want = [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]
    assert bulk.encode_batch(texts) == want
    assert [bulk.encode(t) for t in texts] == want


def test_long_texts_differ_only_at_ties(bulk, fast):  # noqa: F811
    """Over a long text float32 (SentencePiece) and float64 (tokenizers) can round an
    exact tie ("5888" = 5+88+8 = 5+8+88) differently; anything else must be identical."""
    scores = [s for _, s in json.loads(fast.to_str())["model"]["vocab"]]
    texts = ["".join(SENTENCES) * 20, "\n".join(MIXED) * 5, "".join(CHECK) * 10]
    for text, got, want in zip(texts, bulk.encode_batch(texts), [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]):
        if got != want:
            assert fast.decode(got) == fast.decode(want)
            assert sum(scores[i] for i in got) == pytest.approx(sum(scores[i] for i in want), abs=1e-6)
            assert len(got) == len(want)


def test_boundary_and_poison_never_leak(bulk):
    out = bulk.encode_batch(EDGE)
    assert all(bulk.boundary not in ids and bulk.poison not in ids for ids in out)
    assert bulk.sp.piece_to_id(BOUNDARY) == bulk.boundary and bulk.sp.piece_to_id(POISON) == bulk.poison


def test_charsmap_is_normalize_on_every_code_point(bulk):
    """SentencePiece's normalizer, one character at a time: normalize(c), whitespace as
    the boundary, context-dependent characters as POISON."""
    rules, space_like, _, hard = char_table(True)
    diffs = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        want = POISON if c in hard else BOUNDARY if c in space_like else normalize(c)
        if bulk.sp.normalize(c) != want:
            diffs.append(hex(cp))
    assert diffs == []
    assert SPACE_MARK in hard and "\u0301" in hard and "\u03a3" in hard and "中" not in hard


def test_whitespace_before_ascii_pairs(bulk):
    """Every whitespace character before every character that starts an ASCII run gives
    mark_spaces' "▁" (one rule per pair) and one pre-token boundary otherwise."""
    _, space_like, alnum_start, _ = char_table(True)
    for w in sorted(space_like):
        for x in ("a", "Ｚ", "①", "㎏", "中", "，"):
            text = "中" + w + x
            got = bulk.sp.normalize(text).replace(BOUNDARY, "|")
            marked = mark_spaces(normalize(text))
            want = "中" + (SPACE_MARK + normalize(x) if x in alnum_start else "|" + normalize(x))
            assert got == want, (hex(ord(w)), x, got)
            assert pieces(marked)[1:] == ([SPACE_MARK + normalize(x)] if x in alnum_start else [normalize(x)])


def test_stale_model_is_refused(built, tmp_path):  # noqa: F811
    """A jieba_unigram.model whose pieces are not tokenizer.json's (another build) is an error."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(built[0] / "out", other)
    spec = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    vocab[200], vocab[201] = vocab[201], vocab[200]  # same size, two ids swapped
    (other / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match="does not match tokenizer.json"):
        BulkEncoder(other)


def test_added_special_token_goes_through_tokenizer_json(built, tmp_path, fast):  # noqa: F811
    """A special added after the build has an id beyond the model's pieces; a text that
    contains it is encoded by tokenizer.json, and the boundary id never leaks."""
    import shutil

    from tokenizers import AddedToken, Tokenizer

    other = tmp_path / "added"
    shutil.copytree(built[0] / "out", other)
    tok = Tokenizer.from_file(str(built[0] / "out" / "tokenizer.json"))
    tok.add_special_tokens([AddedToken("[NEW]", special=True)])
    tok.save(str(other / "tokenizer.json"))
    texts = ["北京[NEW]上海 hello", "北京 上海 hello"]
    assert BulkEncoder(other).encode_batch(texts) == [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def test_other_recipes_are_refused(built, tmp_path):  # noqa: F811
    """Only the jieba word + character folder is replicated: a SentencePiece-algo or
    hand-edited normalizer is a clear error, not silently different ids."""
    import shutil

    other = tmp_path / "edited"
    shutil.copytree(built[0] / "out", other)
    (other / MODEL_FILE).unlink()
    spec = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"]["normalizers"] = spec["normalizer"]["normalizers"][:-1]  # no space marking
    (other / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match="ALGO=wordpiece"):
        BulkEncoder(other)


@pytest.mark.slow   # a second tokenizer build
def test_no_lowercase_build(tmp_path):
    """--no-lowercase: the rules keep case, and ids still equal tokenizer.json's."""
    from test_tokenizer_build import write_corpus

    from tokenizer.build import build_tokenizer
    from tokenizer.fast import load

    data = write_corpus(tmp_path / "data", n_docs=40)
    build_tokenizer(str(data), str(tmp_path / "out"), vocab_size=3000, lowercase=False, stats=False)
    tok = load(tmp_path / "out")
    texts = CHECK + EDGE + ["Hello World ÀÉ ＡＢＣ iPhone 6S"]
    assert BulkEncoder(tmp_path / "out").encode_batch(texts) == [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
