"""RoFormer-Sim (SimBERTv2): UniLM mask, contrastive loss, RoPE, training on DeepSpeed, export, STS evaluation.

The unit tests use a tiny randomly initialized model; the end-to-end tests run
`pretrain.launch` (what `make pretrain MODEL=roformer-sim` runs) at tiny size on
CPU, one process and two processes under ZeRO-2, on the embedded sample corpus.
"""
import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO

STEPS = 8
UNPACKED = "train.packing=false"       # the row-layout tests read one sequence per row (packing: test_packing.py)
CORPUS_ONLY = "objective.pair_file="   # without the tiny preset's sample pair file: batches of corpus pairs only


def launch(tmp, data, run, *extra, nproc=1):
    cmd = [sys.executable, "-m", "pretrain.launch", "--model", "roformer-sim", "--steps", str(STEPS),
           "--nproc", str(nproc), "--run", str(tmp / run), *data, "train.log_every=2", "train.eval_every=4",
           "train.save_every=4", "train.eval_generate=8", "train.micro_batch_size=8", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="session")
def sim_data(t5_data):
    """Clean sample corpus and tokenizer for RoFormer-Sim (config overrides): the tiny presets of
    RoFormer-Sim and T5-PEGASUS clean and tokenize the sample the same way, so the session's
    T5 stages serve (the launcher would reuse them too); Sim reads no pairs folder."""
    return [o for o in t5_data if not o.startswith("data.pairs_dir=")]


@pytest.fixture(scope="session")
def objective(tiny_data):
    from pretrain.config import load_config
    from pretrain.objectives.roformer_sim import RoFormerSimObjective

    cfg = load_config(REPO / "configs" / "roformer-sim.yaml", [*tiny_data, UNPACKED, CORPUS_ONLY, "arch.dropout_rate=0.0"])
    return RoFormerSimObjective(cfg)


@pytest.fixture(scope="session")
def runs(sim_data, tmp_path_factory):
    """One single-process and one 2-process ZeRO-2 tiny run."""
    tmp = tmp_path_factory.mktemp("simruns")
    single = launch(tmp, sim_data, "single")
    assert single.returncode == 0, single.stderr[-4000:]
    double = launch(tmp, sim_data, "zero2x2", "--zero", "2", nproc=2)
    assert double.returncode == 0, double.stderr[-4000:]
    return tmp


# ---------------------------------------------------------------- pure functions
def test_unilm_mask_values():
    from pretrain.objectives.roformer_sim import additive_mask, unilm_mask

    # [CLS] a1 a2 [SEP] | b1 b2 [SEP] | [PAD]
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0]])
    attn = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    got = unilm_mask(types, attn)[0].int().tolist()
    want = [[1, 1, 1, 1, 0, 0, 0, 0]] * 4 + [
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1, 0],   # a padding query: its row is never used
    ]
    assert got == want
    add = additive_mask(unilm_mask(types, attn), torch.float32)
    assert add.shape == (1, 1, 8, 8)
    assert add[0, 0, 0, 0] == 0 and add[0, 0, 0, 4] == torch.finfo(torch.float32).min


def test_contrastive_loss_matches_hand_computation():
    from pretrain.objectives.roformer_sim import contrastive_loss

    # pairs (v0, v2) and (v1, v3); scale 30 as in SimBERT
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [1.0, 0.3]])   # row 3 is closer to row 0 than to its partner
    loss, acc = contrastive_loss(v, scale=30.0)
    unit = [[x / math.hypot(*row) for x in row] for row in v.tolist()]
    total, correct = 0.0, 0
    for i in range(4):
        logits = {j: 30.0 * (unit[i][0] * unit[j][0] + unit[i][1] * unit[j][1]) for j in range(4) if j != i}
        partner = (i + 2) % 4
        total += -(logits[partner] - math.log(sum(math.exp(z) for z in logits.values())))
        correct += max(logits, key=logits.get) == partner
    assert loss.item() == pytest.approx(total / 4, rel=1e-5)
    assert acc.item() == pytest.approx(correct / 4)


def test_contrastive_loss_hard_negatives_are_extra_candidates():
    from pretrain.objectives.roformer_sim import contrastive_loss

    # anchors: pairs (v0, v2), (v1, v3); v4 is a hard negative: a candidate for every anchor, never an anchor
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [1.0, 0.3], [0.9, 0.1]])
    loss, acc = contrastive_loss(v, scale=30.0, anchors=4)
    unit = [[x / math.hypot(*row) for x in row] for row in v.tolist()]
    total, correct = 0.0, 0
    for i in range(4):
        logits = {j: 30.0 * (unit[i][0] * unit[j][0] + unit[i][1] * unit[j][1]) for j in range(5) if j != i}
        partner = (i + 2) % 4
        total += -(logits[partner] - math.log(sum(math.exp(z) for z in logits.values())))
        correct += max(logits, key=logits.get) == partner
    assert loss.item() == pytest.approx(total / 4, rel=1e-5)
    assert acc.item() == pytest.approx(correct / 4)
    assert loss.item() > contrastive_loss(v[:4], scale=30.0)[0].item()   # v4 sits next to v0 and v3


def test_pair_file_labels_relative_to_file_max(tmp_path):
    from pretrain.objectives.roformer_sim import RoFormerSimConfig, load_pair_files

    (tmp_path / "binary.tsv").write_text("花呗怎么还款\t花呗如何还钱\t1\n花呗怎么还款\t借呗怎么还款\t0\n"
                                         "没有标签的一行\t也算相似\n只有一列\n", encoding="utf-8")
    (tmp_path / "scored.tsv").write_text("一个人在弹吉他。\t一个男人在弹吉他。\t4\n一个女人在切洋葱。\t一个男人在跳舞。\t0\n"
                                         "一只猫在睡觉。\t一只狗在睡觉。\t2\n孩子在骑马。\t一个小孩在骑马。\t5\n",
                                         encoding="utf-8")
    opt = RoFormerSimConfig(pair_file=f"{tmp_path / 'binary.tsv'}, {tmp_path / 'sc*.tsv'}")
    (binary, binary_neg, binary_rows), (scored, scored_neg, scored_rows) = load_pair_files(opt)
    assert binary == [("花呗怎么还款", "花呗如何还钱"), ("没有标签的一行", "也算相似")]
    assert binary_neg == [("花呗怎么还款", "借呗怎么还款")]
    assert scored == [("一个人在弹吉他。", "一个男人在弹吉他。"), ("孩子在骑马。", "一个小孩在骑马。")]  # 4/5 >= 0.8
    assert scored_neg == [("一个女人在切洋葱。", "一个男人在跳舞。")]                                   # 2/5: neither
    assert [r[2] for r in binary_rows] == [1.0, 0.0, 1.0]                 # every row keeps its score for CoSENT
    assert [r[2] for r in scored_rows] == [0.8, 0.0, 0.4, 1.0]
    with pytest.raises(ValueError, match="matches no file"):
        load_pair_files(RoFormerSimConfig(pair_file=str(tmp_path / "missing*.tsv")))


def test_collate_hard_negative_rows(tiny_data, tmp_path):
    from pretrain.config import load_config
    from pretrain.objectives.roformer_sim import RoFormerSimObjective

    (tmp_path / "p.tsv").write_text("今天天气很好\t天气不错\t1\n我们去公园散步\t我们不去公园\t0\n", encoding="utf-8")
    cfg = load_config(REPO / "configs" / "roformer-sim.yaml",
                      [*tiny_data, UNPACKED, f"objective.pair_file={tmp_path / 'p.tsv'}", "objective.pair_file_ratio=1.0",
                       "objective.pair_negative_ratio=1.0"])
    objective = RoFormerSimObjective(cfg)
    random.seed(0)
    batch = objective.collate([{"text": "第一句话在这里。"}, {"text": "第二句话在这里。"}])
    tok = objective.tokenizer
    assert batch["input_ids"].shape[0] == 2 * 2 + 2                  # 2 self-pairs in both directions + 2 negatives
    has_target = (batch["token_type_ids"] == 1).any(1)
    assert has_target.tolist() == [True] * 4 + [False] * 2
    assert not (batch["label_positions"][0] >= 4).any()               # negatives have no seq2seq labels
    neg = tok.decode(batch["input_ids"][4][batch["attention_mask"][4] == 1], skip_special_tokens=True)
    assert neg.replace(" ", "") == "我们不去公园"
    target = tok.decode(batch["input_ids"][0][batch["token_type_ids"][0] == 1], skip_special_tokens=True)
    assert target.replace(" ", "") == "我们去公园散步"                 # the anchor's own sentence is its positive


def test_cosent_loss_matches_hand_computation():
    from pretrain.objectives.roformer_sim import cosent_loss

    torch.manual_seed(0)
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    scores = torch.tensor([1.0, 0.0, 0.6, 0.2, 1.0])
    groups = torch.tensor([0, 0, 1, 1, 1])
    cos = [F.cosine_similarity(a[i], b[i], dim=0).item() for i in range(5)]
    terms = [math.exp(20 * (cos[j] - cos[i])) for i in range(5) for j in range(5)
             if scores[i] > scores[j] and groups[i] == groups[j]]
    assert len(terms) == 1 + 3                       # rows of different files are never compared
    assert cosent_loss(a, b, scores, groups, 20.0).item() == pytest.approx(math.log(1 + sum(terms)), rel=1e-5)
    assert cosent_loss(a, b, torch.ones(5), groups, 20.0).item() == 0.0   # nothing to rank


def test_collate_cosent_rows(tiny_data, tmp_path):
    from pretrain.config import load_config
    from pretrain.objectives.roformer_sim import RoFormerSimObjective, contrastive_loss, cosent_loss

    (tmp_path / "p.tsv").write_text("今天天气很好\t天气不错\t5\n我们去公园散步\t我们不去公园\t1\n", encoding="utf-8")
    (tmp_path / "same.tsv").write_text("没有标签\t也相似\n", encoding="utf-8")   # nothing to rank: never drawn
    cfg = load_config(REPO / "configs" / "roformer-sim.yaml",
                      [*tiny_data, UNPACKED, f"objective.pair_file={tmp_path / 'p.tsv'},{tmp_path / 'same.tsv'}",
                       "objective.pair_file_ratio=0.0", "objective.cosent_weight=1.0", "objective.cosent_rows=3"])
    objective = RoFormerSimObjective(cfg)
    random.seed(0)
    batch = objective.collate([{"text": "第一句话在这里。"}, {"text": "第二句话在这里。"}])
    assert batch["input_ids"].shape[0] == 2 * 2 + 2 * 3               # 2 pairs both ways + 3 a's + 3 b's
    assert not (batch["token_type_ids"][4:] == 1).any()               # CoSENT rows are source-only
    assert {round(x, 4) for x in batch["cosent_scores"].tolist()} <= {1.0, 0.2}
    assert batch["cosent_groups"].tolist() == [0, 0, 0]
    tok = objective.tokenizer
    text = [tok.decode(r[m == 1], skip_special_tokens=True).replace(" ", "")
            for r, m in zip(batch["input_ids"], batch["attention_mask"])]
    for k, score in enumerate(batch["cosent_scores"].tolist()):
        assert (text[4 + k], text[7 + k]) == (("今天天气很好", "天气不错") if score == 1.0 else ("我们去公园散步", "我们不去公园"))
    model = objective.build_model().eval()                             # no dropout: vectors are reproducible
    loss, terms = objective.loss(model, batch)
    vectors, _ = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    assert terms["contrastive_loss"] == pytest.approx(contrastive_loss(vectors[:4], 30.0, 4)[0].item(), rel=1e-5)
    assert terms["cosent_loss"] == pytest.approx(cosent_loss(vectors[4:7], vectors[7:], batch["cosent_scores"],
                                                             batch["cosent_groups"], 20.0).item(), rel=1e-5)
    unranked = load_config(REPO / "configs" / "roformer-sim.yaml",
                           [*tiny_data, f"objective.pair_file={tmp_path / 'same.tsv'}", "objective.cosent_weight=1.0"])
    with pytest.raises(ValueError, match="cosent_weight"):
        RoFormerSimObjective(unranked)


def test_swap_words_makes_paws_style_negatives(tiny_data, tmp_path):
    from pretrain.config import load_config
    from pretrain.objectives.roformer_sim import RoFormerSimObjective, swap_words

    rng = random.Random(0)
    for text in ("库克池位于劳雷尔湖东南面和汤顿河西面。", "我的借呗额度为什么降了", "花呗怎么还款"):
        swapped = swap_words(text, rng)
        assert swapped != text and sorted(swapped) == sorted(text)          # same characters, other order
    assert swap_words("好", rng) is None and swap_words("我 我", rng) is None   # nothing different to swap
    cfg = load_config(REPO / "configs" / "roformer-sim.yaml",
                      [*tiny_data, UNPACKED, CORPUS_ONLY, "objective.swap_negative_prob=1.0", "objective.neighbor_prob=0.0"])
    objective = RoFormerSimObjective(cfg)
    random.seed(0)
    batch = objective.collate([{"text": "我们明天去公园散步。"}, {"text": "今天天气很好。"}])
    assert batch["input_ids"].shape[0] == 2 * 2 + 2                   # one swapped negative per anchor
    assert not (batch["token_type_ids"][4:] == 1).any()
    tok = objective.tokenizer
    negatives = [tok.decode(r[m == 1], skip_special_tokens=True).replace(" ", "")
                 for r, m in zip(batch["input_ids"][4:], batch["attention_mask"][4:])]
    for negative, anchor in zip(negatives, ("我们明天去公园散步。", "今天天气很好。")):
        assert negative != anchor and sorted(negative) == sorted(anchor)   # the anchor's words, reordered


def test_rope_scores_depend_only_on_relative_offset():
    from transformers.models.roformer.modeling_roformer import (RoFormerSelfAttention,
                                                                 RoFormerSinusoidalPositionalEmbedding)

    torch.manual_seed(0)
    dim = 16
    pos = RoFormerSinusoidalPositionalEmbedding(64, dim)
    pos.weight.data = pos.create_weight()
    sin = pos(torch.Size([1, 64]))[None, None]               # (1, 1, 64, dim)
    q, k = torch.randn(dim), torch.randn(dim)
    qs, ks = q.expand(1, 1, 64, dim), k.expand(1, 1, 64, dim)
    rq, rk = RoFormerSelfAttention.apply_rotary_position_embeddings(sin, qs, ks)
    scores = rq[0, 0] @ rk[0, 0].T                           # scores[m, n] = <R_m q, R_n k>
    for offset in (-5, 0, 3, 17):
        diag = torch.diagonal(scores, offset=offset)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-4), offset
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 3)[0])


def test_spearman_matches_reference_values():
    from pretrain.evaluation.sts import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4) -> rho = 0.9486833
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, rel=1e-6)


def test_paired_bootstrap_separates_a_better_model_from_itself():
    import numpy as np

    from pretrain.evaluation.sts import paired_bootstrap

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400).astype(float)
    good = labels + rng.normal(0, 0.5, 400)              # tracks the labels
    noise = rng.normal(0, 1, 400)                         # does not
    better = paired_bootstrap(good, noise, labels, resamples=200, seed=0)
    assert better["delta"] > 0.3 and better["ci95"][0] > 0.2 and better["share_not_better"] == 0.0
    same = paired_bootstrap(good, good, labels, resamples=50, seed=0)
    assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["share_not_better"] == 1.0


def test_length_controlled_spearman_removes_a_score_that_only_tracks_length():
    import numpy as np

    from pretrain.evaluation.sts import partial_spearman, spearman

    rng = np.random.default_rng(0)
    length = rng.integers(4, 30, 2000).astype(float)
    labels = (length + rng.normal(0, 8, 2000) > 17).astype(float)      # longer pairs more often similar
    by_length = length + rng.normal(0, 1, 2000)                         # a cosine that only follows length
    assert spearman(by_length, labels) > 0.4
    assert abs(partial_spearman(by_length, labels, length)) < 0.1
    similar = labels + rng.normal(0, 0.5, 2000)                         # tracks the labels, not the length
    assert partial_spearman(similar, labels, length) > 0.5


# ---------------------------------------------------------------- model-level (tiny, random init)
def test_future_target_tokens_do_not_change_earlier_positions(objective):
    torch.manual_seed(0)
    model = objective.build_model().eval()
    batch = objective.encode_pairs([("今天天气很好，我们去公园散步。", "天气不错，我们一起去公园走走吧。")],
                                   random.Random(0))
    ids, types, attn = batch["input_ids"][:1], batch["token_type_ids"][:1], batch["attention_mask"][:1]
    everywhere = torch.stack(torch.meshgrid(torch.arange(1), torch.arange(ids.shape[1]), indexing="ij")).flatten(1)
    cls0, logits0 = model(ids, types, attn, everywhere)
    first_target = int((types[0] == 1).nonzero()[0])
    t = first_target + 2
    changed = ids.clone()
    changed[0, t] = (changed[0, t] + 7) % len(objective.tokenizer)
    cls1, logits1 = model(changed, types, attn, everywhere)
    assert torch.allclose(logits0[:t], logits1[:t], atol=1e-5)     # positions before t never see token t
    assert not torch.allclose(logits0[t:], logits1[t:], atol=1e-3)
    assert torch.allclose(cls0, cls1, atol=1e-6)                    # [CLS] sees the source only
    # ... while a source token change reaches the earliest target position
    src_changed = ids.clone()
    src_changed[0, 1] = (src_changed[0, 1] + 7) % len(objective.tokenizer)
    _, logits2 = model(src_changed, types, attn, everywhere)
    assert not torch.allclose(logits0[first_target], logits2[first_target], atol=1e-3)


def test_collate_builds_both_directions_with_labels(objective):
    random.seed(0)
    records = [{"id": "a", "text": "第一句话在这里。第二句话紧随其后。第三句话结束全文。"},
               {"text_a": "今天天气很好", "text_b": "天气不错"}]
    batch = objective.collate(records)
    n = 2 * len(records)
    assert batch["input_ids"].shape[0] == n
    cls, sep = objective.tokenizer.cls_token_id, objective.tokenizer.sep_token_id
    assert (batch["input_ids"][:, 0] == cls).all()
    rows, cols = batch["label_positions"]
    assert torch.equal(batch["labels"], batch["input_ids"][rows, cols + 1])
    assert (batch["token_type_ids"][rows, cols + 1] == 1).all()
    for r in range(n):   # every sequence ends its target with [SEP] and predicts it
        last = int(batch["attention_mask"][r].sum()) - 1
        assert batch["input_ids"][r, last] == sep and ((rows == r) & (cols == last - 1)).any()
    # row 1 is "今天天气很好" -> "天气不错", row 3 the reverse
    text = objective.tokenizer.decode(batch["input_ids"][3][batch["token_type_ids"][3] == 1],
                                      skip_special_tokens=True)
    assert text.replace(" ", "") == "今天天气很好"


def test_bart_noise_deletes_and_masks(objective):
    ids = list(range(100, 300))
    saved = (objective.opt.noise_prob, objective.opt.delete_ratio, objective.opt.mask_ratio)
    objective.opt.noise_prob, objective.opt.delete_ratio, objective.opt.mask_ratio = 1.0, 0.2, 0.3
    try:
        noisy = objective.noise(ids, random.Random(0))
    finally:
        objective.opt.noise_prob, objective.opt.delete_ratio, objective.opt.mask_ratio = saved
    mask_id = objective.tokenizer.mask_token_id
    assert 120 < len(noisy) < 190                        # about 20% deleted
    assert 0.15 < noisy.count(mask_id) / len(noisy) < 0.45
    kept = [t for t in noisy if t != mask_id]
    assert kept == sorted(kept)                          # order of the kept tokens is preserved


# ---------------------------------------------------------------- training through the real engine
def test_training_logs_terms_and_exports(runs):
    for run in ("single", "zero2x2"):
        records = [json.loads(line) for line in (runs / run / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r.get("split") != "valid"]
        valid = [r for r in records if r.get("split") == "valid"]
        assert train[-1]["step"] == STEPS
        assert {"seq2seq_loss", "contrastive_loss", "contrastive_acc", "loss"} <= set(train[-1])
        assert all(math.isfinite(r["loss"]) for r in train)
        assert train[-1]["seq2seq_loss"] < train[0]["seq2seq_loss"]
        assert valid and {"loss", "retrieval_acc"} <= set(valid[-1])
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            assert (runs / run / "export" / name).is_file(), (run, name)


def clean_pairs(objective, pairs):
    """encode_pairs without BART noise (noise_prob 0) so sources are the given texts."""
    saved, objective.opt.noise_prob = objective.opt.noise_prob, 0.0
    try:
        return objective.encode_pairs(pairs, random.Random(0))
    finally:
        objective.opt.noise_prob = saved


def test_export_loads_in_auto_classes_with_matching_outputs(runs, sim_data):
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from pretrain.config import load_config
    from pretrain.objectives.roformer_sim import RoFormerSimObjective, SimModel, additive_mask, encode, unilm_mask

    # the objective of the runs' own data and tokenizer (the session's tiny_data has another vocabulary)
    objective = RoFormerSimObjective(load_config(REPO / "configs" / "roformer-sim.yaml",
                                                 [*sim_data, CORPUS_ONLY, "arch.dropout_rate=0.0"]))

    export = runs / "zero2x2" / "export"
    tok = AutoTokenizer.from_pretrained(export)
    enc = AutoModel.from_pretrained(export).eval()
    lm = AutoModelForCausalLM.from_pretrained(export).eval()
    assert type(enc).__name__ == "RoFormerModel" and type(lm).__name__ == "RoFormerForCausalLM"
    assert enc.config.model_type == "roformer" and enc.config.vocab_size == len(tok)
    # The training module around the exported weights: its [CLS] vectors (UniLM mask, full
    # pair) equal RoFormerModel's on the source sentence alone.
    sim = SimModel(lm.config).eval()
    sim.lm = lm
    pairs = [("怎么开通花呗", "花呗如何开通"), ("今天天气很好", "天气不错")]
    batch = clean_pairs(objective, pairs)
    with torch.no_grad():
        cls, logits = sim(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                          batch["label_positions"])
        texts = [a for a, _ in pairs] + [b for _, b in pairs]
        assert torch.allclose(encode(enc, tok, texts), cls, atol=1e-4)
        # ... and its logits equal RoFormerForCausalLM's given the UniLM mask as a 4D attention mask.
        mask = additive_mask(unilm_mask(batch["token_type_ids"], batch["attention_mask"]), torch.float32)
        full = lm(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=mask).logits
        rows, cols = batch["label_positions"]
        assert torch.allclose(full[rows, cols], logits, atol=1e-4)


def test_distillation_matches_teacher_cosines(runs, sim_data):
    """distill_loss = MSE of off-diagonal in-batch cosines, student vs teacher; zero for the teacher itself."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from pretrain.config import load_config
    from pretrain.objectives.roformer_sim import RoFormerSimObjective, cosine_matrix, encode

    export = runs / "single" / "export"
    cfg = load_config(REPO / "configs" / "roformer-sim.yaml",
                      [*sim_data, CORPUS_ONLY, "arch.dropout_rate=0.0", f"objective.teacher={export}", "objective.noise_prob=0.0"])
    obj = RoFormerSimObjective(cfg)
    torch.manual_seed(0)
    student = obj.build_model().eval()
    pairs = [("第一句话在这里", "第二句话紧随其后"), ("怎么开通花呗", "花呗如何开通"), ("今天天气很好", "适合出门散步")]
    batch = obj.encode_pairs(pairs, random.Random(0))
    with torch.no_grad():
        _, terms_random = obj.loss(student, batch)
        texts = [a for a, _ in pairs] + [b for _, b in pairs]
        tok = AutoTokenizer.from_pretrained(export)
        s_cos = cosine_matrix(encode(student.lm, tok, texts)).double()
        t_cos = cosine_matrix(encode(AutoModel.from_pretrained(export), tok, texts)).double()
        off = ~torch.eye(len(texts), dtype=torch.bool)
        by_hand = ((s_cos - t_cos)[off] ** 2).mean().item()
        student.lm = AutoModelForCausalLM.from_pretrained(export).eval()
        _, terms_same = obj.loss(student, batch)
    assert terms_random["distill_loss"] == pytest.approx(by_hand, rel=2e-2)
    assert terms_same["distill_loss"] < 1e-3 * terms_random["distill_loss"]


def test_evaluate_sts_cli_reports_spearman_baseline_and_generations(runs, shared_data):
    export = runs / "single" / "export"
    proc = subprocess.run([sys.executable, "-m", "pretrain.evaluate", "--task", "sts", "--model", str(export),
                           "--data", str(shared_data / "sts" / "senteval_cn"), "-o", "baseline=true",
                           "-o", "max_examples=300", "-o", "generate=1", "-o", "num_samples=4", "-o", "bootstrap=20",
                           "-o", "baseline_seeds=2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["task"] == "sts"
    assert set(result["spearman"]) == {"ATEC", "BQ", "LCQMC", "PAWSX", "STS-B"}
    assert set(result["baseline"]["spearman"]) == set(result["spearman"])
    assert all(-1.0 <= v <= 1.0 for v in result["spearman"].values())
    assert result["spearman"] != result["baseline"]["spearman"]
    assert result["pooling"] == "mean"                    # the config's sentence_pooling, used for both models
    boot = result["baseline"]["bootstrap"]["LCQMC"]
    assert boot["resamples"] == 20 and boot["ci95"][0] <= boot["ci95"][1]
    assert boot["delta"] == pytest.approx(result["spearman"]["LCQMC"] - result["baseline"]["spearman"]["LCQMC"], abs=2e-4)
    seeds = result["baseline"]["seeds"]                 # two random inits, the first one also at the top level
    assert [r["seed"] for r in seeds] == [0, 1] and seeds[0]["spearman"] == result["baseline"]["spearman"]
    assert seeds[0]["spearman"] != seeds[1]["spearman"]
    lo, hi = result["baseline"]["range"]["LCQMC"]
    assert lo == min(r["spearman"]["LCQMC"] for r in seeds) and hi == max(r["spearman"]["LCQMC"] for r in seeds)
    assert set(result["baseline"]["verdict"].values()) <= {"above", "below", "tie"}
    assert result["examples"]["ATEC"] == 300
    assert len(result["generated"]) == 1 and isinstance(result["generated"][0]["outputs"], list)


def test_sts_verdict_over_several_random_inits():
    """Above (or below) only when the interval against every init excludes 0; else a tie."""
    from pretrain.evaluation.sts import _verdict
    assert _verdict([[0.01, 0.03], [0.002, 0.02]]) == "above"
    assert _verdict([[0.01, 0.03], [-0.007, 0.011]]) == "tie"
    assert _verdict([[-0.13, -0.10], [-0.05, -0.01]]) == "below"
