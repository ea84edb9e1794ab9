"""tokenizer.released: exact tokenizers for the released vocabularies, against literal references.

The references (tokenizer.released_reference) are the recipes written out: bert4keras'
jieba + WordPiece tokenizer for T5 PEGASUS / WoBERT, transformers' slow BertTokenizer for
BERT-Chinese.  Measured: the slow test below (1,875 documents, every 10th of each corpus
file, at most 100 a file) gives identical ids for all three recipes; so does every one of
the 334,410 texts of all shared-data files for T5 PEGASUS.
"""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
import unicodedata

import pytest

from conftest import REPO, SHARED_DATA

VOCAB = SHARED_DATA / "vocab"
pytestmark = pytest.mark.skipif(not (VOCAB / "t5_pegasus_vocab.txt").exists(), reason="shared vocabularies not available")
FILES = {"t5-pegasus": "t5_pegasus_vocab.txt", "wobert": "wobert_vocab.txt", "bert-chinese": "bert_chinese_vocab.txt"}

# What the recipes must survive: ASCII runs jieba glues, c++/4s店 (dictionary words starting with a
# character jieba never cuts alone), accents, full-width forms, controls, CR LF, emoji, traditional
# characters, a dictionary word outside the vocabulary (信心十足), an over-long word, literal brackets.
EDGE = [
    "Hello World! 北京大学的iPhone 6s售价5888元，c++和C#都学过，去1号店买4S店的配件。",
    "Ｆｕｌｌ　ｗｉｄｔｈ ＡＢＣ１２３ café naïve Ångström ΑΣ",
    "a\x00b\u200dc\ufffd 信心十足 大學 😀😀 \r\n\r\n end\u2028next\ttab",
    "匟床上叠床，" + "超" * 250 + "，" + "x" * 250,
    "[CLS] 不是特殊标记吗？#话题# @某人 http://t.cn/abc 3.14159 2024-01-01",
    "",
    "   ",
]


def short_texts() -> list[str]:
    lines = (SHARED_DATA / "corpus" / "thucnews_titles" / "dev.txt").read_text(encoding="utf-8").splitlines()
    return [ln.split("\t")[0] for ln in lines[:300]] + EDGE


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tokenizer.released import build_released_tokenizer

    root = tmp_path_factory.mktemp("released")
    for recipe in ("t5-pegasus", "bert-chinese"):
        build_released_tokenizer(VOCAB / FILES[recipe], recipe, root / recipe)
    return root


@pytest.fixture(scope="module")
def loaded(folders):
    from transformers import AutoTokenizer

    import tokenizer.released  # noqa: F401  (registers JiebaBertTokenizer)

    return {recipe: AutoTokenizer.from_pretrained(str(folders / recipe)) for recipe in ("t5-pegasus", "bert-chinese")}


@pytest.fixture(scope="module")
def t5(loaded):
    return loaded["t5-pegasus"]


def test_bert_classes_match_transformers():
    """bert_basic's character classes are transformers' own (BMP, and the CJK extension bounds);
    "removed" is bert4keras' Cc/Cf, where transformers drops every C* category."""
    from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer
    from transformers.tokenization_python import _is_control, _is_punctuation, _is_whitespace

    from tokenizer.bert_basic import is_cjk, is_punctuation, is_removed, is_space

    basic = BasicTokenizer()
    for cp in [*range(0x10000), *range(0x20000, 0x2FA20, 7), 0x2A6DF, 0x2A6E0, 0x2B73F, 0x2CEAF, 0x2CEB0, 0x2FA1F]:
        ch = chr(cp)
        assert is_cjk(ch) == basic._is_chinese_char(cp), hex(cp)
        assert is_punctuation(ch) == _is_punctuation(ch), hex(cp)
        assert is_space(ch) == _is_whitespace(ch), hex(cp)
        cc_cf = unicodedata.category(ch) in ("Cc", "Cf") and not is_space(ch)
        assert is_removed(ch) == (cp in (0, 0xFFFD) or cc_cf), hex(cp)
        assert not is_removed(ch) or _is_control(ch) or cp in (0, 0xFFFD), hex(cp)
    assert not is_removed("\ue000") and _is_control("\ue000")  # private use: kept by bert4keras only


def _normalizer_diffs(stop: int) -> list[int]:
    """Assigned code points below ``stop`` where Rust and Python normalize differently
    (one normalize_str call: the characters "\\n"-separated, each a grapheme of its own)."""
    from tokenizer.released import bert4keras_normalizer
    from tokenizer.released_reference import Bert4kerasJieba

    chars = [chr(cp) for cp in range(stop) if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) != "Cn" and chr(cp) != "\n"]
    rust = bert4keras_normalizer().normalize_str("\n".join(chars)).split("\n")
    assert len(rust) == len(chars)
    return [ord(c) for c, r in zip(chars, rust) if r != Bert4kerasJieba.lower_and_strip(c)]


def test_normalizer_is_python_lower_nfd_strip_mn():
    """The Rust normalizer is bert4keras' do_lower_case on every assigned BMP code point."""
    from tokenizer.released import bert4keras_normalizer
    from tokenizer.released_reference import Bert4kerasJieba

    assert _normalizer_diffs(0x10000) == []
    for text in ("ÉCOLE Ａ é", "ΟΔΥΣΣΕΥΣ ΑΣ中 Σ ΣΑ aΣ!"):  # final sigma depends on the neighbours
        assert bert4keras_normalizer().normalize_str(text) == Bert4kerasJieba.lower_and_strip(text)


def test_normalizer_on_every_code_point():
    """All planes: one difference, U+11938 (Dives Akuru, whose NFD Rust's tables leave alone)."""
    assert _normalizer_diffs(0x110000) == [0x11938]


def test_segmentation_is_jieba(t5):
    """The segmenter cuts like jieba.cut(HMM=False) with the full dictionary, including blocks
    where a prefix-only character starts a word (匟床, c++), which go to jieba itself."""
    from tokenizer.jieba_util import jieba_instance

    dt = jieba_instance()
    texts = short_texts() + ["匟床上叠床", "匟床头柜", "cc++c 1号店12", "快快快快快乐乐乐", "ab.cd-ef_g%h&i#j+k"]
    for text in texts:
        norm = text.lower()
        assert t5.jieba.cut(norm) == list(dt.cut(norm, HMM=False)), text
    assert t5.jieba.needs_jieba("匟床上叠床") and t5.jieba.needs_jieba("学c++") and not t5.jieba.needs_jieba("c1号")
    assert t5.jieba.block_words("匟床上叠床") == [(0, 2), (2, 3), (3, 5)]  # the Unigram alone: 匟|床上叠床


@pytest.mark.parametrize("recipe", ["t5-pegasus", "bert-chinese"])
def test_fast_equals_literal_reference(loaded, recipe):
    from tokenizer.released_reference import reference_for

    tok = loaded[recipe]
    ref = reference_for(recipe, VOCAB / FILES[recipe])
    texts = short_texts()
    got = tok(texts, add_special_tokens=False)["input_ids"]
    for text, ids in zip(texts, got):
        assert ids == ref.encode(text), text
    assert [tok(t, add_special_tokens=False)["input_ids"] for t in EDGE] == got[-len(EDGE):]  # one by one too
    if recipe == "t5-pegasus":  # bert4keras never matched a typed "[CLS]"; BERT's tokenizer does
        assert tok.tokenize("[CLS]")[0] == "[" and "[CLS]" not in tok.tokenize("[CLS]")
    else:
        assert tok.tokenize("[CLS]") == ["[CLS]"]


def test_jieba_recipe_tokens(t5):
    """A vocabulary word is one token, a dictionary word outside it falls back to characters."""
    toks = t5.tokenize("北京大学信心十足")
    assert toks[0] == "北京大学" and toks[-4:] == ["信", "心", "十", "足"]
    assert t5.tokenize("iPhone 6s售价5888元") == ["iphone", "6s", "售价", "588", "##8", "元"]
    assert t5.tokenize("x" * 201) == ["[UNK]"] and len(t5.tokenize("x" * 200)) > 1  # bert4keras' word_maxlen: 200


def test_autotokenizer_folder(folders, t5):
    from tokenizer.released import JiebaBertTokenizer

    assert isinstance(t5, JiebaBertTokenizer)
    assert not (folders / "t5-pegasus" / "tokenizer.json").exists()  # unloadable without this package
    vocab = (VOCAB / FILES["t5-pegasus"]).read_text(encoding="utf-8").split("\n")
    assert [t5.pad_token_id, t5.unk_token_id, t5.cls_token_id, t5.sep_token_id, t5.mask_token_id] == \
        [vocab.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    assert t5.eos_token == "[SEP]" and t5.bos_token == "[CLS]" and len(t5) == 50000
    enc = t5("北京欢迎你", "上海")
    assert enc["input_ids"][0] == t5.cls_token_id and enc["input_ids"].count(t5.sep_token_id) == 2
    assert "token_type_ids" not in enc  # T5 PEGASUS: generate() rejects them
    assert t5.decode(enc["input_ids"], skip_special_tokens=True) == "北京欢迎你上海"
    offsets = t5("Hi，北京", return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    assert offsets == [(0, 2), (2, 3), (3, 5)]  # into the original text
    batch = t5(["北京", "北京欢迎你"], padding=True)
    assert len(set(map(len, batch["input_ids"]))) == 1
    config = json.loads((folders / "t5-pegasus" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["released_recipe"]["recipe"] == "t5-pegasus" and len(config["released_recipe"]["dictionary_sha256"]) == 64
    assert config["split_special_tokens"] is True


def test_bert_chinese_is_a_plain_tokenizer_json(folders, loaded):
    from transformers import BertTokenizerLegacy

    hf = loaded["bert-chinese"]
    assert type(hf).__name__ == "TokenizersBackend" and (folders / "bert-chinese" / "tokenizer.json").exists()
    slow = BertTokenizerLegacy(str(VOCAB / FILES["bert-chinese"]))
    enc, want = hf("北京", "上海"), slow("北京", "上海", return_token_type_ids=True)
    assert enc["input_ids"] == want["input_ids"] and enc["token_type_ids"] == want["token_type_ids"]


@pytest.mark.slow     # 2 s (the fast tier stays under a minute)
def test_save_reload_pickle_copy(t5, tmp_path):
    from transformers import AutoTokenizer

    text = EDGE[0]
    want = t5(text)["input_ids"]
    t5.save_pretrained(str(tmp_path / "again"))
    assert AutoTokenizer.from_pretrained(str(tmp_path / "again"))(text)["input_ids"] == want
    assert (tmp_path / "again" / "vocab.txt").read_text(encoding="utf-8") == (VOCAB / FILES["t5-pegasus"]).read_text(encoding="utf-8")
    assert pickle.loads(pickle.dumps(t5))(text)["input_ids"] == want
    assert copy.deepcopy(t5)(text)["input_ids"] == want
    assert t5(text)["input_ids"] == want  # the original still has its pre-tokenizer


def test_vocab_errors(tmp_path):
    from tokenizer.released import build_released_tokenizer

    bad = tmp_path / "vocab.txt"
    bad.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n北京\n北京\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt:7: token '北京' repeats line 6"):
        build_released_tokenizer(bad, "wobert", tmp_path / "out")
    bad.write_text("北京\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing special tokens"):
        build_released_tokenizer(bad, "wobert", tmp_path / "out")
    with pytest.raises(ValueError, match="recipe must be one of"):
        build_released_tokenizer(VOCAB / FILES["wobert"], "roberta", tmp_path / "out")


@pytest.mark.slow
def test_cli_and_loading_without_this_package(tmp_path):
    """The one-call builder; a plain transformers process refuses the jieba folder loudly."""
    out = tmp_path / "wobert"
    res = subprocess.run([sys.executable, "-m", "tokenizer.released", "--vocab", str(VOCAB / FILES["wobert"]),
                          "--recipe", "wobert", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["vocab_size"] == 33586
    plain = subprocess.run([sys.executable, "-c", f"from transformers import AutoTokenizer; AutoTokenizer.from_pretrained({str(out)!r})"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plain.returncode != 0
    res = subprocess.run([sys.executable, "-m", "tokenizer.released", "--vocab", str(tmp_path / "none.txt"),
                          "--recipe", "wobert", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "none.txt" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["t5-pegasus", "wobert", "bert-chinese"])
def test_agreement_on_real_documents(tmp_path, recipe):
    """>= 99% of real documents from every corpus file tokenize exactly as the literal recipe."""
    from tokenizer.agreement import released_agreement
    from tokenizer.released import build_released_tokenizer
    from tokenizer.shared_corpora import documents

    texts = [t for name, docs in documents(SHARED_DATA).items() if name.startswith("corpus/") for t in docs[::10][:100]]
    build_released_tokenizer(VOCAB / FILES[recipe], recipe, tmp_path / recipe)
    a = released_agreement(tmp_path / recipe, recipe, VOCAB / FILES[recipe], texts)
    print(json.dumps(a, ensure_ascii=False, indent=1))
    assert a["documents"] >= 1000
    assert a["document_agreement"] >= 0.99, a["differences"]
