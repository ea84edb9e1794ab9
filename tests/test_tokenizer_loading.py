"""tokenizer.loading.load_any_tokenizer on each kind of folder a base checkpoint ships
(the spiece.model-only kind is in test_tokenizer_spiece.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import SHARED_DATA

VOCAB = SHARED_DATA / "vocab"
pytestmark = pytest.mark.skipif(not (VOCAB / "wobert_vocab.txt").exists(), reason="shared vocabularies not available")
TEXTS = ["北京大学的iPhone 6s售价5888元，信心十足。", "Hello World! c++和C#", "今天天气很好，我们一起去公园散步吧。"]


def test_vocab_txt_only_is_bert(tmp_path):
    from transformers import BertTokenizerLegacy

    from tokenizer.loading import load_any_tokenizer

    shutil.copyfile(VOCAB / "bert_chinese_vocab.txt", tmp_path / "vocab.txt")
    tok, slow = load_any_tokenizer(tmp_path), BertTokenizerLegacy(str(VOCAB / "bert_chinese_vocab.txt"))
    assert [tok(t)["input_ids"] for t in TEXTS] == [slow(t)["input_ids"] for t in TEXTS]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.txt"]  # nothing written into the base


@pytest.mark.slow     # 2-3 s (the fast tier stays under a minute)
def test_roformer_vocab_gets_the_jieba_recipe(tmp_path):
    """RoFormer / WoBERT folders ship vocab.txt and a tokenizer class that pre-cuts with jieba."""
    from tokenizer.loading import load_any_tokenizer
    from tokenizer.released import JiebaBertTokenizer
    from tokenizer.released_reference import Bert4kerasJieba

    shutil.copyfile(VOCAB / "wobert_vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RoFormerTokenizer"}), encoding="utf-8")
    tok, ref = load_any_tokenizer(tmp_path), Bert4kerasJieba(VOCAB / "wobert_vocab.txt")
    assert isinstance(tok, JiebaBertTokenizer)
    assert [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS] == [ref.encode(t) for t in TEXTS]
    assert "token_type_ids" in tok("你好")  # a BERT-style encoder


@pytest.mark.slow     # 2-4 s (the fast tier stays under a minute)
def test_tokenizer_json_and_jieba_folders(tmp_path):
    from transformers import AutoTokenizer

    from tokenizer.loading import load_any_tokenizer, write_tokenizer_json
    from tokenizer.released import JiebaBertTokenizer, build_released_tokenizer

    build_released_tokenizer(VOCAB / "bert_chinese_vocab.txt", "bert-chinese", tmp_path / "bert")
    assert load_any_tokenizer(tmp_path / "bert")(TEXTS)["input_ids"] == AutoTokenizer.from_pretrained(str(tmp_path / "bert"))(TEXTS)["input_ids"]
    build_released_tokenizer(VOCAB / "wobert_vocab.txt", "wobert", tmp_path / "wobert")
    assert isinstance(load_any_tokenizer(tmp_path / "wobert"), JiebaBertTokenizer)
    with pytest.raises(ValueError, match="needs tokenizer.released"):
        write_tokenizer_json(tmp_path / "wobert", tmp_path / "out")


def test_missing_tokenizer_is_one_clear_error(tmp_path):
    from tokenizer.loading import load_any_tokenizer

    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_any_tokenizer(tmp_path / "absent")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer \(tokenizer.json"):
        load_any_tokenizer(tmp_path)
    shutil.copyfile(VOCAB / "bert_chinese_vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}), encoding="utf-8")
    with pytest.raises(ValueError, match="cased vocab.txt"):
        load_any_tokenizer(tmp_path)
