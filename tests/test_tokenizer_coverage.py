"""No character is silently lost (#17.6): common simplified + traditional Han characters in the
vocabulary, every other character as UTF-8 byte pieces; decode gives the text back."""

from __future__ import annotations

import json

import pytest

from test_tokenizer_build import SENTENCES, write_corpus

TRADITIONAL = "我在大學讀書，學習歷史與經濟。臺灣的學生們說：「謝謝！」"
EMOJI = "太好吃了😀😀👍🏻 ❤️ 龘靐齉 ｶﾞ한국어 Ω"


def small_vocab(vocab_size: int = 8000, **options):
    """The small corpus' vocabulary as a Tokenizer, built in memory (no Beam job)."""
    from collections import Counter

    from tokenizer.fast import build_unigram
    from tokenizer.normalize import normalize
    from tokenizer.vocab import Counts, select_vocab

    counts = Counts(chars=Counter(ch for s in SENTENCES for ch in normalize(s) if not ch.isspace()), documents=len(SENTENCES))
    counts.characters = sum(counts.chars.values())
    vocab = select_vocab(counts, vocab_size=vocab_size, **options)
    return build_unigram(vocab.tokens, vocab.scores, byte_fallback=options.get("byte_fallback", True)), vocab


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The default vocabulary (coverage + byte fallback) of a 50,000 budget, saved as a folder."""
    from tokenizer.bulk import write_model
    from tokenizer.fast import save_folder

    out = tmp_path_factory.mktemp("cov") / "out"
    save_folder(small_vocab(50000)[0], out)
    write_model(out)
    return out


def test_coverage_sets_come_from_the_codecs():
    from tokenizer.vocab import coverage_chars

    gb, both = coverage_chars("gb2312"), coverage_chars("gb2312+big5")
    assert len(gb) == 6763 and len(both) == 8836 and set(gb) < set(both) and coverage_chars("none") == []
    assert "学" in gb and "學" not in gb and "學" in both and "臺" in both
    with pytest.raises(ValueError, match="char coverage must be one of"):
        coverage_chars("big5-hkscs")


def test_traditional_and_emoji_round_trip(built):
    """Regression: 大學 used to be 大 [UNK] and an emoji run one [UNK]."""
    from transformers import AutoTokenizer

    from tokenizer.fast import load
    from tokenizer.normalize import canonical

    out = built
    tok, hf = load(out), AutoTokenizer.from_pretrained(str(out))
    for text in (TRADITIONAL, EMOJI, TRADITIONAL + EMOJI):
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.token_to_id("[UNK]") not in ids, text
        assert tok.decode(ids) == canonical(text), text
        assert hf.decode(hf(text)["input_ids"], skip_special_tokens=True) == canonical(text)
    assert "學" in tok.encode("大學", add_special_tokens=False).tokens  # a covered character is one token
    assert tok.encode("😀", add_special_tokens=False).tokens == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]


def test_reference_and_bulk_agree_on_fallback(built):
    from tokenizer.bulk import BulkEncoder
    from tokenizer.fast import load
    from tokenizer.reference import JiebaWordPieceTokenizer

    out = built
    texts = [TRADITIONAL, EMOJI, "😀😀 a😀b 龘😀龘", *SENTENCES[:3]]
    want = [e.ids for e in load(out).encode_batch(texts, add_special_tokens=False)]
    ref = JiebaWordPieceTokenizer.from_pretrained(out)
    assert [ref.encode(t) for t in texts] == want
    assert BulkEncoder(out).encode_batch(texts) == want
    assert ref.decode(want[1]) == load(out).decode(want[1])


@pytest.mark.slow
def test_stats_report_every_shared_file(tmp_path, shared_data):
    """stats.json: the share of characters lost to [UNK] on every shared-data file (none with byte fallback)."""
    from tokenizer.build import build_tokenizer

    stats = build_tokenizer(str(write_corpus(tmp_path / "data")), str(tmp_path / "out"), vocab_size=50000)
    report = json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))["shared_data"]
    assert report == stats["shared_data"] and len(report["files"]) >= 40
    assert all(f["characters"] > 0 and f["unk_characters"] == 0 for f in report["files"].values())
    assert report["total"]["byte_fallback_char_rate"] > 0  # this tiny vocabulary leans on the bytes
    assert stats["valid"]["ours"]["unk_char_rate"] == 0.0
    assert stats["composition"]["byte"] == 256


def test_options_and_budget():
    from tokenizer.vocab import BYTE_PIECES, COVERAGE_SHARE, SPECIALS

    tok, vocab = small_vocab()
    assert vocab.tokens[len(SPECIALS) : len(SPECIALS) + 256] == BYTE_PIECES
    assert vocab.kinds["coverage"] == int(COVERAGE_SHARE * 8000)  # the most probable ones, within the budget
    assert "的" in vocab.tokens and "學" not in vocab.tokens[-100:]
    plain, old = small_vocab(char_coverage="none", byte_fallback=False)
    assert "coverage" not in old.kinds and "<0x00>" not in old.tokens
    ids = plain.encode("大學😀😀", add_special_tokens=False).ids  # the defect, kept as an option
    assert ids == [plain.token_to_id("大"), plain.token_to_id("[UNK]")]
    bytes_only, _ = small_vocab(char_coverage="none")
    assert bytes_only.encode("學", add_special_tokens=False).tokens == ["<0xE5>", "<0xAD>", "<0xB8>"]
    assert tok.encode("<0x41>", add_special_tokens=False).tokens != ["<0x41>"]  # typed text never matches a byte piece
    from collections import Counter

    from tokenizer.vocab import Counts, select_vocab

    with pytest.raises(ValueError, match="vocab_size must exceed 362"):  # specials + 256 bytes + 1
        select_vocab(Counts(chars=Counter("北京")), vocab_size=300)


def test_sentencepiece_algo_covers_too(tmp_path):
    from tokenizer.build import build_tokenizer
    from tokenizer.fast import load
    from tokenizer.normalize import canonical

    data = write_corpus(tmp_path / "data", n_docs=40)
    build_tokenizer(str(data), str(tmp_path / "spm"), vocab_size=3000, algo="sentencepiece", stats=False)
    tok = load(tmp_path / "spm")
    ids = tok.encode(TRADITIONAL + EMOJI, add_special_tokens=False).ids
    assert tok.token_to_id("[UNK]") not in ids and tok.decode(ids) == canonical(TRADITIONAL + EMOJI)
    assert tok.get_vocab_size() <= 3000


def test_transplant_gives_byte_pieces_the_mean_row():
    import torch

    from tokenizer.transplant import transplant_embeddings

    old_vocab = ["[PAD]", "[UNK]", "<", "0", "x", "北"]
    old = torch.arange(len(old_vocab) * 2, dtype=torch.float32).reshape(len(old_vocab), 2)
    new = transplant_embeddings(old, old_vocab, ["<0x41>", "北", "<0x"])
    assert torch.allclose(new[0], old.mean(0)) and torch.equal(new[1], old[5])
    assert torch.allclose(new[2], old[2:5].mean(0))  # not a byte piece: its characters
