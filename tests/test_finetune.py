"""Downstream fine-tuning: metrics against hand-computed cases, data roles, a tiny end-to-end fine-tune,
the `make eval` suite, the card section and the training-time probe."""
import json
import random

import numpy as np
import pytest

from pretrain.evaluation import scoring
from pretrain.evaluation.tasks import TASKS, Source, bucket, group_key, load_splits

# -- metrics --------------------------------------------------------------------------------


def test_accuracy_and_macro_f1_by_hand():
    assert scoring.accuracy([1, 0, 2], [1, 1, 2]) == pytest.approx(2 / 3)
    # class 0: tp 1, 2 predicted, 1 gold -> 2/3; class 1: tp 2, 2 predicted, 3 gold -> 4/5
    assert scoring.macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    # a class only predicted (never gold) counts with F1 0
    assert scoring.macro_f1([2, 1], [1, 1]) == pytest.approx((0 + 2 / 3) / 2)


@pytest.mark.parametrize("pred, answers, em, f1", [
    ("光荣和ω-force", ["光荣和ω-force"], 1, 1.0),
    ("《战国无双3》", ["战国无双3"], 1, 1.0),                 # 《》 are on the official list
    ("1998", ["1998年"], 0, 2 / 3),                          # ["1998"] vs ["1998", "年"]
    ("NBA总冠军", ["NBA 总冠军"], 0, 1.0),                    # EM keeps spaces, F1 segments them away
    ("3", ["3.14米"], 0, 0.0),                               # digits are one segment: "3" != "3.14"
    ("3.14", ["3.14米"], 0, 2 / 3),
    ("1000元", ["1,000元"], 0, 0.5),                         # ASCII comma is not on the list: "1,000" one token
    ("甲丙丁", ["甲乙丙丁"], 0, 4 / 7),                      # contiguous run 丙丁: p 2/3, r 2/4
    ("好…", ["好"], 0, 2 / 3),                               # a lone … is kept ("……" is two characters)
    ("Apple公司", ["apple公司"], 1, 1.0),                    # lower-cased
    ("北京市", ["北京", "北京市"], 1, 1.0),                   # best reference answer
    ("北京", ["北京市"], 0, 0.8),
    ("", ["北京"], 0, 0.0),
    ("U.S.A总统", ["u.s.a 总统"], 0, 1.0),                   # dotted abbreviation is one word
])
def test_cmrc_official_em_f1(pred, answers, em, f1):
    assert scoring.cmrc_em(pred, answers) == em
    assert scoring.cmrc_f1(pred, answers) == pytest.approx(f1)


def test_mixed_segmentation():
    assert scoring.mixed_segmentation("2018年FIFA World Cup，在俄罗斯") == \
        ["2018", "年", "fifa", "world", "cup", "在", "俄", "罗", "斯"]
    assert scoring.mixed_segmentation("a-b", remove_punct=False) == ["a", "-", "b"]


def test_paired_bootstrap():
    same = scoring.paired_bootstrap([[1, 0, 1, 0]], [[1, 0, 1, 0]], 200)
    assert same["delta"] == 0 and same["ci95"] == [0, 0] and same["share_not_better"] == 1.0
    better = scoring.paired_bootstrap([[1, 1, 1, 1], [1, 1, 0, 1]], [[0, 0, 0, 0], [0, 0, 0, 0]], 200, scale=100)
    assert better["delta"] == pytest.approx(87.5) and better["share_not_better"] == 0.0
    assert 50 <= better["ci95"][0] <= better["ci95"][1] <= 100
    with pytest.raises(ValueError):
        scoring.paired_bootstrap([[1, 0]], [[1, 0, 1]])


# -- data roles -----------------------------------------------------------------------------


def test_bucket_is_sha1_and_stable():
    assert bucket("abc") == 38 and bucket("今天天气不错") == 81
    src = Source("x", (("train", 80), ("dev", 20)))
    assert src.role_of("abc") == "train" and src.role_of("今天天气不错") == "dev"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_roles_are_disjoint_on_the_real_files(name, shared_data):
    """No test row (by its group key: text, pair or passage) in train or dev, no dev row in train, for every task."""
    rows, stats = load_splits(name, shared_data)
    keys = {role: {group_key(TASKS[name], r) for r in part} for role, part in rows.items()}
    assert not keys["test"] & keys["train"] and not keys["test"] & keys["dev"] and not keys["dev"] & keys["train"]
    assert all(rows.values()), stats
    assert stats["read"] == sum(len(p) for p in rows.values()) + sum(stats["rejected"].values()) + stats["overlap_dropped"]


def write_titles(root, dev_lines, test_lines):
    folder = root / "corpus" / "thucnews_titles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dev.txt").write_text("".join(line + "\n" for line in dev_lines), encoding="utf-8")
    (folder / "test.txt").write_text("".join(line + "\n" for line in test_lines), encoding="utf-8")


def test_rows_repeated_in_the_test_file_are_dropped_and_bad_rows_counted(tmp_path, caplog):
    dev = [f"标题{i}\t{i % 10}" for i in range(40)] + ["重复的标题\t3", "没有标签", "坏标签\tx", "越界\t10"]
    write_titles(tmp_path, dev, ["重复的标题\t3", "另一个\t1"])
    rows, stats = load_splits("thucnews_titles", tmp_path)
    assert stats["overlap_dropped"] == 1
    assert stats["rejected"] == {"expected text<TAB>label": 1, "label is not an integer": 1, "label outside 0..9": 1}
    assert stats["read"] == 46 == len(rows["train"]) + len(rows["dev"]) + len(rows["test"]) + 3 + 1
    assert "重复的标题" not in {r["text"] for r in rows["train"] + rows["dev"]}
    assert "dev.txt:42: expected text<TAB>label (3 rejected rows in this file" in caplog.text


# -- a tiny encoder and a toy task ------------------------------------------------------------
CLASS_WORDS = ["足球", "股票", "电影", "考试", "房价", "游戏", "手机", "选举", "旅游", "天气"]
FILLER = "的了是在有这个我们他们一些今天明天新闻报道发布消息"


def toy_titles(n: int, seed: int) -> list[str]:
    """Headline-like lines: filler characters around the class's keyword."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        label = i % 10
        left = "".join(rng.choice(FILLER) for _ in range(rng.randint(2, 6)))
        right = "".join(rng.choice(FILLER) for _ in range(rng.randint(2, 6)))
        lines.append(f"{left}{CLASS_WORDS[label]}{right}\t{label}")
    return lines


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A character vocabulary (tokenizer.fast.build_unigram) + a 1-layer BERT masked LM, saved as an export."""
    from transformers import BertConfig, BertForMaskedLM

    from tokenizer.fast import build_unigram, save_folder
    from tokenizer.vocab import SPECIALS

    out = tmp_path_factory.mktemp("ft") / "export"
    chars = sorted(set("".join(CLASS_WORDS) + FILLER + "问题答案北京上海年月日0123456789abc"))
    tok = build_unigram(SPECIALS + chars, [0.0] * len(SPECIALS) + [-1.0] * len(chars))
    save_folder(tok, out)
    import torch
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(SPECIALS) + len(chars), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                               pad_token_id=0)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_titles(root, toy_titles(300, 1), toy_titles(100, 2))
    return root


def test_span_labels_and_decoding_round_trip(tiny_model):
    """Training labels of a passage window point at the answer; decoding those positions gives it back."""
    from transformers import AutoTokenizer

    from pretrain.evaluation.finetune import Encoder, decode_spans

    tok = AutoTokenizer.from_pretrained(tiny_model)
    row = {"question": "问题", "context": "今天北京发布消息" * 6 + "上海天气" + "新闻" * 10,
           "answers": ["上海天气"], "answer_starts": [48]}
    enc = Encoder(tok, TASKS["cmrc2018"], max_len=40, type_ids=True, doc_stride=16)
    feats, _ = enc([row], train=True)
    inside = [f for f in feats if f["start_positions"]]
    assert len(feats) > 1 and inside, "the passage spans several windows, one of them holds the answer"
    eval_feats, meta = enc([row], train=False)
    starts, ends = [], []
    for f, train_f in zip(eval_feats, feats):
        s, e = np.zeros(40), np.zeros(40)
        s[train_f["start_positions"]] += 5
        e[train_f["end_positions"]] += 5
        starts.append(s)
        ends.append(e)
    assert decode_spans([row], meta, starts, ends, max_answer_tokens=10) == ["上海天气"]


def test_capped_rows_do_not_depend_on_the_seed_or_input_order():
    from pretrain.evaluation.finetune import capped

    rows = [{"text": f"t{i}", "label": i % 2} for i in range(50)]
    first = capped(rows, TASKS["weibo"], 10)
    assert first == capped(list(reversed(rows)), TASKS["weibo"], 10) and len(first) == 10


@pytest.mark.slow
def test_tiny_fine_tune_beats_chance_and_is_deterministic(tiny_model, toy_data):
    from pretrain.evaluation.finetune import run

    opts = dict(task="thucnews_titles", batch_size=16, lr=3e-3, progress=False, per_example=True)
    a = run(str(tiny_model), str(toy_data), seed=0, steps=150, **opts)
    assert a["test"]["accuracy"] > 50 > 3 * a["chance"], a      # chance: 10 %
    assert a["n"]["test"] == 100 and len(a["per_example"]) == 100
    b, c = (run(str(tiny_model), str(toy_data), seed=0, steps=10, **opts) for _ in range(2))
    assert b["test"] == c["test"] and b["train_loss"] == c["train_loss"] and b["per_example"] == c["per_example"]
    scratch = run(str(tiny_model), str(toy_data), seed=0, steps=10, init="scratch", **opts)
    assert scratch["init"] == "scratch" and scratch["train_loss"] != b["train_loss"]


@pytest.mark.slow
def test_suite_writes_eval_json_table_and_card(tiny_model, toy_data, tmp_path, capsys):
    """`make eval`'s entry point on a run directory: RUN/eval/<task>.json, the printed table, the card section."""
    import shutil

    from pretrain.evaluate import main
    from pretrain.evaluation.card import card_section

    run = tmp_path / "run"
    shutil.copytree(tiny_model, run / "export")
    (run / "run.json").write_text(json.dumps({"model": "mlm-proposal", "vocab_size": 1}))
    code = main(["--run", str(run), "--model-name", "mlm-proposal", "--suite", "thucnews_titles", "--seeds", "0,1",
                 "--data", str(toy_data), "-o", "steps=30", "-o", "progress=false"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith("| task | metric (test) | n | pretrained")
    saved = json.loads((run / "eval" / "thucnews_titles.json").read_text())
    assert len(saved["pretrained"]["test"]["seeds"]) == 2 and len(saved["runs"]) == 4
    lo, hi = saved["difference"]["ci95"]
    assert lo <= hi
    card = card_section(run)
    assert "## Downstream fine-tuning" in card and "scratch twin" in card
    assert main(["--run", str(run), "--model-name", "electra"]) == 2       # run.json says mlm-proposal
    assert "not 'electra'" in capsys.readouterr().err


def test_card_lists_published_rows_beside_ours(tmp_path):
    from pretrain.evaluation.card import card_section

    assert card_section(tmp_path) == ""
    summary = {"task": "lcqmc", "metric": "accuracy", "n": {"train": 100, "dev": 10, "test": 50}, "params": 1_090_000,
               "recipe": {"steps": 300}, "pretrained": {"test": {"mean": 60.0, "std": 1.0, "seeds": [59, 61]}},
               "scratch": {"test": {"mean": 55.0, "std": 2.0, "seeds": [53, 57]}},
               "difference": {"delta": 5.0, "ci95": [1.0, 9.0]}}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "lcqmc.json").write_text(json.dumps(summary))
    card = card_section(tmp_path)
    assert "| lcqmc | this model | 1.1M" in card and "+5.0 [+1.0, +9.0]" in card
    assert "ELECTRA-small (published" in card and "acc 85.9 (85.6)" in card and "| 12M |" in card


def test_probe_on_the_dev_role(tiny_model, toy_data):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from pretrain.evaluation.probe import probe

    tok, model = AutoTokenizer.from_pretrained(tiny_model), AutoModelForMaskedLM.from_pretrained(tiny_model)
    model.train()
    out = probe(model, tok, "thucnews_titles", n_train=200, n_dev=100, data=str(toy_data))
    assert model.training, "the probe puts the model back in training mode"
    assert out["probe_n_dev"] == len(load_splits("thucnews_titles", toy_data)[0]["dev"])
    assert 0 <= out["probe_accuracy"] <= 100
    assert probe(model, tok, "thucnews_titles", n_train=200, n_dev=100, data=str(toy_data)) | {"probe_seconds": 0} == \
        out | {"probe_seconds": 0}
    with pytest.raises(ValueError):
        probe(model, tok, "cmrc2018", data=str(toy_data))


def test_span_ceiling_counts_answers_on_token_boundaries(tiny_model):
    from transformers import AutoTokenizer

    from pretrain.evaluation.finetune import span_ceiling

    tok = AutoTokenizer.from_pretrained(tiny_model)            # one token per character: every span aligns
    rows = [{"context": "北京上海", "answers": ["上海"], "answer_starts": [2]},
            {"context": "北京上海", "answers": ["广州"], "answer_starts": [-1]}]
    assert span_ceiling(rows, tok) == 0.5


@pytest.mark.slow
def test_make_eval_reads_run_from_the_environment_without_shell(tmp_path):
    """`make eval` passes RUN as one argument (no shell): a hostile value is a missing folder, one error line."""
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(["make", "-s", "-o", "setup", "-o", ".venv/.setup-stamp", "eval", "MODEL=electra",
                           f"RUN=x'; touch {tmp_path}/p; '"], cwd=repo, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode != 0 and not (tmp_path / "p").exists()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no exported model" in errors[0], proc.stderr
