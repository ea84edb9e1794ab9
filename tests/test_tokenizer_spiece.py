"""tokenizer.spiece: a SentencePiece model alone (Google's mT5 folders) as a fast tokenizer.

The stand-in for mT5's spiece.model is trained here on real text from ZH_SHARED_DATA with
mT5's settings (tokenizer.spiece.train_spiece); ground truth is the sentencepiece library.
Measured (slow test, 8,000 pieces, 29,700 held-out texts of every shared file): 29,693
identical, the other 7 ties (same text, same total score to float32 precision; e.g. repeats,
哈哈哈哈哈哈哈哈 = 哈哈+哈哈哈+哈哈哈 or 哈哈哈+哈哈+哈哈哈), which SentencePiece ranks in float32
and ``tokenizers`` in float64.
"""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "corpus").is_dir(), reason="shared corpora not available")

VOCAB = 5000
EDGE = ["", " ", "  a  b  ", "\n\nx\ny\n", "▁▁a", "hello   world", "全角ＡＢＣ　中文", "😀😀😀 龘龘", "\t tab",
        "a\u3000\u3000b", "Ünïcödé ﬁ ①"]


def split_texts(max_chars: int) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): alternate texts of every shared file."""
    from tokenizer.shared_corpora import documents

    docs = documents(SHARED_DATA, max_chars=max_chars)
    train = [t for name, texts in docs.items() if name.startswith("corpus/") for t in texts[::2]]
    held = [t for texts in docs.values() for t in texts[1::2]]
    return train, held


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A small mT5-shaped tokenizer folder (spiece.model only) and held-out texts."""
    from tokenizer.spiece import write_mt5_standin

    train, held = split_texts(8000)
    folder = write_mt5_standin(tmp_path_factory.mktemp("mt5") / "tok", train, vocab_size=VOCAB)
    return folder, held


def sp_processor(path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(path))


def assert_same_or_tie(sp, texts, got):
    """Identical ids, or (float32 vs float64) a tie: same text, same total score to float32 precision."""
    want = sp.encode(texts)
    score = lambda ids: sum(sp.get_score(i) for i in ids)  # noqa: E731
    differ = [i for i in range(len(texts)) if got[i] != want[i]]
    for i in differ:
        assert sp.decode(got[i]) == sp.decode(want[i]), texts[i]
        assert abs(score(got[i]) - score(want[i])) < 1e-3, texts[i]
    return len(texts) - len(differ)


def test_read_spm_is_the_model(standin):
    from tokenizer.spiece import BYTE, CONTROL, UNKNOWN, read_spm

    folder, _ = standin
    m, sp = read_spm(folder / "spiece.model"), sp_processor(folder / "spiece.model")
    assert len(m.pieces) == sp.get_piece_size() == VOCAB
    for i, (piece, score, kind) in enumerate(m.pieces):
        assert piece == sp.id_to_piece(i) and score == pytest.approx(sp.get_score(i), abs=1e-6)
        assert (kind == CONTROL) == sp.is_control(i) and (kind == UNKNOWN) == sp.is_unknown(i) and (kind == BYTE) == sp.is_byte(i)
    assert (m.pad_id, m.eos_id, m.unk_id, m.bos_id) == (0, 1, 2, -1)  # mT5's layout
    assert m.add_dummy_prefix and m.remove_extra_whitespaces and len(m.charsmap) > 1000


def test_ids_equal_sentencepiece(standin):
    from tokenizer.loading import load_any_tokenizer

    folder, held = standin
    texts = held[:300] + EDGE
    tok = load_any_tokenizer(folder)
    got = tok(texts, add_special_tokens=False)["input_ids"]
    same = assert_same_or_tie(sp_processor(folder / "spiece.model"), texts, got)
    assert same >= len(texts) - 2
    assert got[-len(EDGE):] == sp_processor(folder / "spiece.model").encode(EDGE)  # whitespace edge cases exactly


def test_t5_conventions(standin):
    from tokenizer.loading import load_any_tokenizer

    folder, held = standin
    tok, sp = load_any_tokenizer(folder), sp_processor(folder / "spiece.model")
    enc = tok("你好")
    assert enc["input_ids"] == sp.encode("你好") + [1] and "token_type_ids" not in enc  # $A </s>
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert len(tok) == VOCAB + 100 and tok.convert_tokens_to_ids("<extra_id_0>") == VOCAB + 99
    assert tok.convert_tokens_to_ids("<extra_id_99>") == VOCAB
    decoded = 0
    for text in held[:50]:
        ids = sp.encode(text)
        if sp.unk_id() not in ids:  # SentencePiece shows an unknown piece as " ⁇ ", transformers as "<unk>"
            assert tok.decode(ids) == sp.decode(ids), text  # dummy prefix dropped, spaces restored
            decoded += 1
    assert decoded > 30
    assert tok.decode(tok("北京 <extra_id_0> 上海")["input_ids"], skip_special_tokens=True) == sp.decode(sp.encode("北京 上海"))


def test_write_tokenizer_json_next_to_spiece(standin, tmp_path):
    """After write_tokenizer_json, plain AutoTokenizer loads the folder with the same ids;
    the folder's own files are left as they were, and a second call refuses to overwrite."""
    import shutil

    from transformers import AutoTokenizer

    from tokenizer.loading import load_any_tokenizer, write_tokenizer_json

    folder, held = standin
    copy = tmp_path / "mt5"
    shutil.copytree(folder, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    assert write_tokenizer_json(copy) == copy / "tokenizer.json"
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.name in before} == before
    hf = AutoTokenizer.from_pretrained(str(copy))
    texts = held[:200] + EDGE
    assert hf(texts)["input_ids"] == load_any_tokenizer(folder)(texts)["input_ids"]
    with pytest.raises(FileExistsError):
        write_tokenizer_json(copy)
    write_tokenizer_json(folder, tmp_path / "elsewhere")  # a complete folder elsewhere
    config = json.loads((tmp_path / "elsewhere" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert AutoTokenizer.from_pretrained(str(tmp_path / "elsewhere"))(texts)["input_ids"] == hf(texts)["input_ids"]
    assert config["eos_token"] == "</s>"


def test_byte_fallback_and_user_symbols(standin, tmp_path):
    """A byte-fallback model with a user-defined symbol: ids equal, emoji decode back."""
    from tokenizer.spiece import spiece_tokenizer, train_spiece

    _, held = standin
    train, _ = split_texts(3000)
    path = train_spiece(train, tmp_path / "bf.model", vocab_size=4000, byte_fallback=True, user_defined_symbols=("<sep>",))
    tok, sp = spiece_tokenizer(path), sp_processor(path)
    texts = held[:200] + EDGE + ["前<sep>后 😀 龘", "<sep><sep>"]
    got = tok(texts, add_special_tokens=False)["input_ids"]
    assert assert_same_or_tie(sp, texts, got) >= len(texts) - 2
    ids = tok("表情😀龘", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == "表情😀龘"


def test_other_models_refused(standin, tmp_path):
    import sentencepiece as spm

    from tokenizer.spiece import build_from_spm, read_spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(["北京 上海 hello world 你好"] * 50), model_prefix=str(tmp_path / "bpe"),
                                   model_type="bpe", vocab_size=30, minloglevel=2, hard_vocab_limit=False)
    with pytest.raises(ValueError, match="unigram only"):
        build_from_spm(read_spm(tmp_path / "bpe.model"))
    (tmp_path / "junk.model").write_bytes(b"")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        read_spm(tmp_path / "junk.model")


@pytest.mark.slow
def test_agreement_on_all_shared_files(tmp_path):
    """mT5-sized stand-in (8,000 pieces): >= 99.9% of held-out texts identical, the rest ties."""
    from tokenizer.loading import load_any_tokenizer
    from tokenizer.spiece import write_mt5_standin

    train, held = split_texts(60000)
    folder = write_mt5_standin(tmp_path / "mt5", train, vocab_size=8000)
    got = load_any_tokenizer(folder)(held, add_special_tokens=False)["input_ids"]
    same = assert_same_or_tie(sp_processor(folder / "spiece.model"), held, got)
    print(json.dumps({"texts": len(held), "identical": same}))
    assert len(held) > 10000 and same >= 0.999 * len(held)
