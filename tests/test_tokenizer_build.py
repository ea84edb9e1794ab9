"""Tokenizer builder on a small corpus written here: vocabulary, fast path, reference, HF loading."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tokenizer.build import build_tokenizer
from tokenizer.fast import load
from tokenizer.normalize import canonical
from tokenizer.reference import JiebaWordPieceTokenizer
from tokenizer.vocab import SENTINELS

SENTENCES = [
    "北京是中国的首都，也是一座历史悠久的城市。",
    "今天天气很好，我们一起去公园散步吧。",
    "人工智能技术正在改变我们的生活和工作方式。",
    "中国人民银行宣布下调存款准备金率0.5个百分点。",
    "他在北京大学学习计算机科学，毕业后去了上海工作。",
    "这家公司发布了新款手机，售价为3999元。",
    "Python 是一种流行的编程语言，很多人用它做数据分析。",
    "经济学家认为，今年的经济增长速度将保持稳定。",
    "学生们在图书馆里安静地看书，准备期末考试。",
    "比赛结束后，球迷们在广场上庆祝球队的胜利。",
    "我们需要保护环境，减少塑料垃圾的使用。",
    "The quick brown fox jumps over the lazy dog 2024 次。",
    "医生建议大家多喝水，早睡早起，保持健康的生活习惯。",
    "上海的房价在过去十年里上涨了很多。",
    "这部电影讲述了一个关于友谊和成长的故事。",
]
RARE = "花园里有一只蝴蝶。"  # 蝴蝶 appears once: below min_word_freq
MIXED = [
    "我爱北京天安门，Hello World! iPhone 6s 售价5888元。",
    "他说 hello 世界  和  空格\t制表符\n换行",
    "全角ＡＢＣ１２３和半角abc123，标点！？",
    "c++ 和 C# 以及 3.14159 和 2024-01-01",
]
UNSEEN = "生僻字：龘靐齉，日本語のテキスト，emoji 😀。"


def write_corpus(root: Path, n_docs: int = 120) -> Path:
    """gzip JSON-lines shards + manifest, shaped like the corpus pipeline's output."""
    docs = []
    for i in range(n_docs):
        k = len(SENTENCES)
        docs.append("".join(SENTENCES[(i * 7 + j * 3) % k] for j in range(1 + i % 4)))
    docs[0] += RARE
    for i, text in enumerate(MIXED):
        docs[1 + i] += text
    shards = []
    for split, part in (("train", docs[:100]), ("valid", docs[100:])):
        rel = f"{split}/shard-00000-of-00001.jsonl.gz"
        (root / split).mkdir(parents=True, exist_ok=True)
        with gzip.open(root / rel, "wt", encoding="utf-8") as f:
            for i, d in enumerate(part):
                f.write(json.dumps({"id": f"{split}-{i}", "text": d}, ensure_ascii=False) + "\n")
        shards.append({"path": rel, "split": split, "documents": len(part)})
    (root / "manifest.json").write_text(json.dumps({"shards": shards}), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    data = write_corpus(root / "data")
    stats = build_tokenizer(str(data), str(root / "out"), vocab_size=8000)
    return root, stats


@pytest.fixture(scope="module")
def fast(built):
    return load(built[0] / "out")


@pytest.fixture(scope="module")
def ref(built):
    return JiebaWordPieceTokenizer.from_pretrained(built[0] / "out")


CHECK = SENTENCES + [RARE, *MIXED, UNSEEN, ""]


def test_output_files_and_stats(built):
    root, stats = built
    out = root / "out"
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "stats.json"):
        assert (out / name).exists(), name
    assert stats["vocab_size"] < 8000  # a tiny corpus gives fewer tokens than requested
    assert stats["composition"]["cjk_word"] > 20
    assert json.loads((out / "stats.json").read_text())["vocab_size"] == stats["vocab_size"]
    assert stats["valid"]["ours"]["unk_rate"] == 0.0


def test_special_token_ids(built, fast):
    vocab = (built[0] / "out" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[5:105] == SENTINELS
    assert fast.token_to_id("<extra_id_99>") == 104
    assert len(vocab) == fast.get_vocab_size() == len(set(vocab))
    enc = fast.encode("你好", "世界")
    assert enc.ids[0] == 2 and enc.ids.count(3) == 2
    assert enc.type_ids == [0] * (enc.ids.index(3) + 1) + [1] * (len(enc.ids) - enc.ids.index(3) - 1)
    assert fast.encode("<extra_id_7>北京[MASK]", add_special_tokens=False).ids[::2] == [12, 4]


def test_segmentation(fast, ref):
    toks = fast.encode("北京是中国的首都", add_special_tokens=False).tokens
    assert "北京" in toks and "首都" in toks  # known words stay one token
    toks = fast.encode("有一只蝴蝶", add_special_tokens=False).tokens
    assert toks[-2:] == ["蝴", "蝶"]  # seen once: not a word, falls back to characters
    assert ref.tokenize("有一只蝴蝶")[-2:] == ["蝴", "蝶"]


def test_round_trip(fast):
    for text in CHECK:
        if text == UNSEEN:
            continue  # characters never seen become [UNK]
        ids = fast.encode(text, add_special_tokens=False).ids
        assert 1 not in ids, text
        assert fast.decode(ids) == canonical(text), text
    assert fast.decode(fast.encode("hello world 北京 ab12 cd").ids) == "hello world北京 ab12 cd"


# Already-clean Chinese text (the corpus pipeline's output): full-width punctuation.
CLEAN_PUNCT = "今天，天气很好！是的吧？是的；我们：（北京）“上海”‘经济’、学生……《电影》【故事】～——·「中国」"


def test_clean_chinese_punctuation_round_trip_is_exact(built, fast, ref, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from pipeline.clean import CJK_PUNCTUATION

    hf = AutoTokenizer.from_pretrained(str(built[0] / "out"))
    vocab = fast.get_vocab()
    assert all(ch in vocab for ch in CJK_PUNCTUATION)  # even those the corpus never used
    ids = fast.encode(CLEAN_PUNCT, add_special_tokens=False).ids
    assert 1 not in ids
    assert fast.decode(ids) == CLEAN_PUNCT == canonical(CLEAN_PUNCT)
    assert ref.encode(CLEAN_PUNCT) == ids and ref.decode(ids) == CLEAN_PUNCT
    assert hf.decode(hf(CLEAN_PUNCT)["input_ids"], skip_special_tokens=True) == CLEAN_PUNCT
    assert fast.encode("，", add_special_tokens=False).tokens == ["，"]
    # full-width letters/digits/space still fold, exactly like the pipeline's cleaning
    assert fast.decode(fast.encode("全角ＡＢＣ１２３，半角！", add_special_tokens=False).ids) == "全角abc123，半角！"


def test_normalizer_is_the_pipeline_cleaning_step(fast):
    from pipeline.clean import normalize_unicode
    from tokenizer.normalize import mark_spaces, normalize

    for text in CHECK + [CLEAN_PUNCT, "ﬁ①㎏ ＡＢＣ　ｘ，!?，！？…...～~", "\ufdd0 a\u3000b"]:
        assert normalize(text, lowercase=False) == normalize_unicode(text), text
        assert fast.normalizer.normalize_str(text) == mark_spaces(normalize(text)), text


def test_fast_matches_reference(fast, ref):
    for text in CHECK:
        assert fast.encode(text, add_special_tokens=False).ids == ref.encode(text), text


def test_autotokenizer_offline(built, fast, ref, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(built[0] / "out"))
    assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (0, 1, 2, 3, 4)
    assert hf.eos_token_id == 3 and hf.model_max_length == 512
    assert hf.convert_tokens_to_ids("<extra_id_0>") == 5
    for text in CHECK:
        ids = hf(text)["input_ids"]
        assert ids == fast.encode(text).ids == ref.encode(text, add_special_tokens=True), text
    assert "token_type_ids" not in hf("你好")  # T5 generate() rejects them
    pair = hf("你好", "北京", return_token_type_ids=True)
    assert pair["input_ids"] == fast.encode("你好", "北京").ids
    assert pair["token_type_ids"] == fast.encode("你好", "北京").type_ids
    batch = hf(CHECK[:4], padding=True)
    assert all(len(x) == len(batch["input_ids"][0]) for x in batch["input_ids"])
    text = SENTENCES[6]
    assert hf.decode(hf(text)["input_ids"], skip_special_tokens=True) == canonical(text)


def test_deterministic_rebuild(built, tmp_path):
    root, _ = built
    build_tokenizer(str(root / "data"), str(tmp_path / "again"), vocab_size=8000, stats=False)
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (root / "out" / "tokenizer.json").read_bytes()
    assert (tmp_path / "again" / "vocab.txt").read_bytes() == (root / "out" / "vocab.txt").read_bytes()


def test_user_dict_saved_and_reloaded(built, tmp_path):
    from tokenizer.jieba_util import USER_DICT_FILE

    user = tmp_path / "user.txt"
    user.write_text("公园散步 500000\n准备金率 500000\n", encoding="utf-8")
    build_tokenizer(str(built[0] / "data"), str(tmp_path / "ud"), vocab_size=8000, stats=False, user_dict=str(user))
    assert (tmp_path / "ud" / USER_DICT_FILE).read_text(encoding="utf-8") == user.read_text(encoding="utf-8")
    fast_ud = load(tmp_path / "ud")
    ref_ud = JiebaWordPieceTokenizer.from_pretrained(tmp_path / "ud")  # finds the saved dictionary itself
    assert ref_ud.user_dict == str(tmp_path / "ud" / USER_DICT_FILE)
    text = "我们一起去公园散步吧，下调存款准备金率。"
    assert "公园散步" in fast_ud.encode(text, add_special_tokens=False).tokens
    assert "准备金率" in ref_ud.tokenize(text)
    # the reloaded reference scores words with the user frequencies, like tokenizer.json
    assert ref_ud.jieba.FREQ["准备金率"] == 500000
    assert JiebaWordPieceTokenizer.from_pretrained(tmp_path / "ud", user_dict="").jieba.FREQ["准备金率"] < 1000
    for t in CHECK + [text]:
        assert fast_ud.encode(t, add_special_tokens=False).ids == ref_ud.encode(t), t


def test_vocab_size_cap(built, tmp_path):
    stats = build_tokenizer(str(built[0] / "data"), str(tmp_path / "cap"), vocab_size=400, stats=False)
    assert stats["vocab_size"] == 400


def test_cli_help():
    res = subprocess.run([sys.executable, "-m", "tokenizer", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--vocab-size" in res.stdout and "--algo" in res.stdout


def test_sentencepiece_algo(built, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    stats = build_tokenizer(str(built[0] / "data"), str(tmp_path / "spm"), vocab_size=8000, algo="sentencepiece")
    assert stats["algo"] == "sentencepiece" and 105 < stats["vocab_size"] <= 8000
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "spm"))
    spm_fast = load(tmp_path / "spm")
    assert hf.convert_ids_to_tokens(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for text in SENTENCES + MIXED:
        ids = hf(text)["input_ids"]
        assert ids == spm_fast.encode(text).ids and ids[0] == 2 and ids[-1] == 3
        assert hf.decode(ids, skip_special_tokens=True) == canonical(text), text


def test_transplant_embeddings():
    import torch

    from tokenizer.transplant import transplant_embeddings

    old_vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "北", "京", "a", "##b"]
    old = torch.arange(len(old_vocab) * 4, dtype=torch.float32).reshape(len(old_vocab), 4)
    new_vocab = ["[PAD]", "[MASK]", "<extra_id_0>", "北京", "京", "▁ab", "龘"]
    new = transplant_embeddings(old, old_vocab, new_vocab)
    assert new.shape == (len(new_vocab), 4)
    assert torch.equal(new[0], old[0]) and torch.equal(new[4], old[6])
    assert torch.equal(new[2], old[4])  # sentinel starts as [MASK]
    assert torch.allclose(new[3], (old[5] + old[6]) / 2)  # word = mean of its characters
    assert torch.allclose(new[5], (old[7] + old[8]) / 2)  # "▁" dropped, "b" found as "##b"
    assert torch.allclose(new[6], old.mean(0))
