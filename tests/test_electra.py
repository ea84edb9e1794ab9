"""ELECTRA: masking and replaced-token labels, the shared embedding, loss weighting, and real training runs."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, SHARED_DATA
from pretrain.config import config_path, load_config
from pretrain.objectives.electra import ElectraObjective, mask_tokens, replace_tokens, rtd_auc, sample_tokens

CLS, SEP, PAD, MASK = 2, 3, 0, 4


@pytest.fixture(scope="module")
def objective(tiny_data):
    """ELECTRA on the in-process sample corpus and tokenizer (unit tier)."""
    return ElectraObjective(load_config(config_path("electra"), tiny_data))


@pytest.fixture(scope="module")
def records(objective):
    from pretrain.data import list_shards, read_shard
    return read_shard(list_shards(objective.train_dir, "train")[0])[:8]


# ---------------------------------------------------------------- labels
def test_mask_tokens_on_a_constructed_batch():
    ids = torch.tensor([[CLS] + list(range(100, 140)) + [SEP],
                        [CLS] + list(range(200, 220)) + [SEP] + [PAD] * 20])
    maskable = (ids != PAD) & (ids != CLS) & (ids != SEP)
    masked, chosen = mask_tokens(ids, maskable, 0.15, MASK, generator=torch.Generator().manual_seed(0))
    assert chosen.sum(1).tolist() == [6, 3]                      # round(0.15 * 40), round(0.15 * 20)
    assert not (chosen & ~maskable).any()                        # never [CLS], [SEP] or padding
    assert (masked[chosen] == MASK).all() and torch.equal(masked[~chosen], ids[~chosen])


def test_replaced_token_labels_count_a_sampled_original_as_original():
    ids = torch.tensor([[CLS, 10, 11, 12, 13, SEP, PAD]])
    mlm_mask = torch.tensor([[False, True, True, False, True, False, False]])
    sampled = torch.tensor([10, 99, 98])                          # position 1 re-samples its own token
    fake, labels = replace_tokens(ids, mlm_mask, sampled)
    assert fake.tolist() == [[CLS, 10, 99, 12, 98, SEP, PAD]]
    assert labels.tolist() == [[0, 0, 1, 0, 1, 0, 0]]


def test_rtd_auc_counts_pairs_and_half_ties():
    """AUC by hand: the share of (replaced, original) pairs the replaced token wins, ties half."""
    assert rtd_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75   # 3 of 4 pairs
    assert rtd_auc(torch.tensor([0.0, 1.0, 1.0, 2.0]), torch.tensor([0, 1, 0, 1])) == 0.875  # one tie: 3.5 / 4
    assert rtd_auc(torch.ones(4), torch.tensor([0, 0, 1, 1])) == 0.5
    assert rtd_auc(torch.tensor([0.3, 0.2]), torch.tensor([0, 0])) == 0.5                    # no replaced token


def test_sampled_replacements_follow_the_generator_softmax():
    """Inverse-CDF sampling draws from softmax(logits / T), like torch.multinomial (but ~5x faster on CPU)."""
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0, -30.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    n = 100_000
    for temperature in (1.0, 2.0):
        draws = sample_tokens(logits.repeat_interleave(n, 0), temperature, torch.Generator().manual_seed(0)).view(2, n)
        freq = torch.stack([torch.bincount(r, minlength=5).float() / n for r in draws])
        assert (freq - torch.softmax(logits / temperature, dim=-1)).abs().max() < 0.006   # ~4 standard errors
        assert draws.min() >= 0 and draws.max() <= 4
    assert sample_tokens(torch.tensor([[-1e4, 5.0, -1e4]])).item() == 1


def test_collate_masks_mask_prob_of_text_tokens_only(objective, records):
    batch = objective.collate(records)
    rate = objective.cfg.objective.mask_prob          # the tiny preset's 25 %; the paper's 15 % elsewhere
    ids, mask, chosen = batch["input_ids"], batch["attention_mask"].bool(), batch["mlm_mask"]
    assert ids.shape[1] <= objective.cfg.train.max_source_len
    assert (ids[:, 0] == CLS).all()
    special = torch.isin(ids, torch.tensor([CLS, SEP, PAD, MASK, 1]))
    assert not (chosen & (special | ~mask)).any()
    per_row = chosen.sum(1).float() / (mask & ~special).sum(1).float()
    assert ((per_row - rate).abs() < 0.05).all(), (rate, per_row)
    assert (batch["masked_input_ids"][chosen] == MASK).all()


def test_forward_labels_match_the_discriminator_input(objective, records):
    """The discriminator sees originals except at masked positions; its labels mark exactly the changed tokens."""
    model = objective.build_model()
    seen = {}
    model.discriminator.register_forward_pre_hook(lambda m, args: seen.setdefault("fake", args[0].clone()))
    batch = objective.collate(records)
    out = model(**batch)
    fake, ids, active = seen["fake"], batch["input_ids"], batch["attention_mask"].bool()
    assert torch.equal(fake[~batch["mlm_mask"]], ids[~batch["mlm_mask"]])
    assert (fake[batch["mlm_mask"]] != MASK).float().mean() > 0.9      # sampled tokens, not [MASK]
    changed = (fake != ids) & active
    c = out["counts"]
    assert int(c["replaced"]) == int(changed.sum()) > 0
    assert int(c["original"]) == int((active & ~changed).sum())        # baseline counts all non-padding tokens
    assert int(c["tokens"]) == int(active.sum())


# ---------------------------------------------------------------- sharing and loss
def test_embeddings_are_one_module_and_counted_once(objective):
    model = objective.build_model()
    disc, gen = model.discriminator, model.generator
    assert gen.electra.embeddings is disc.electra.embeddings
    assert gen.generator_lm_head.weight is disc.electra.embeddings.word_embeddings.weight
    assert gen.config.hidden_size == disc.config.hidden_size // 4 and hasattr(gen.electra, "embeddings_project")
    assert gen.config.intermediate_size == disc.config.intermediate_size // 4
    assert gen.config.num_hidden_layers == disc.config.num_hidden_layers
    emb = sum(p.numel() for p in disc.electra.embeddings.parameters())
    separate = sum(p.numel() for p in disc.parameters()) + sum(p.numel() for p in gen.parameters())
    assert sum(p.numel() for p in model.parameters()) == separate - emb   # lm head bias is the generator's own


def test_loss_is_mlm_plus_50_rtd_and_sampling_passes_no_gradient(objective, records):
    model = objective.build_model()
    batch = objective.collate(records)
    torch.manual_seed(0)
    out = model(**batch)
    assert model.rtd_weight == 50.0
    assert torch.allclose(out["loss"], out["mlm_loss"] + 50.0 * out["rtd_loss"])
    # The RTD loss reaches the generator only through the shared embedding, never through the samples.
    out["rtd_loss"].backward()
    assert model.discriminator.electra.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    gen_own = [p for n, p in model.generator.named_parameters() if "embeddings." not in n and "lm_head" not in n]
    assert all(p.grad is None or not p.grad.any() for p in gen_own)

    heavy = ElectraObjective(load_config(config_path("electra"), [*_overrides(objective), "objective.rtd_weight=7"]))
    m7 = heavy.build_model()
    torch.manual_seed(0)
    out7 = m7(**batch)
    assert torch.allclose(out7["loss"], out7["mlm_loss"] + 7.0 * out7["rtd_loss"])


def _overrides(objective):
    return [f"data.clean_dir={objective.cfg.data.clean_dir}", f"tokenizer.dir={objective.cfg.tokenizer.dir}"]


def test_bad_objective_key_is_one_line(objective):
    from pretrain.config import ConfigError
    with pytest.raises(ConfigError, match="objective.mask_prb"):
        ElectraObjective(load_config(config_path("electra"), [*_overrides(objective), "objective.mask_prb=0.2"]))


# ---------------------------------------------------------------- real training runs
STEPS = 40


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """`make pretrain MODEL=electra` at tiny size on real news text, 2 processes under ZeRO-2."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (set ZH_SHARED_DATA)")
    tmp = tmp_path_factory.mktemp("electra")
    corpus = SHARED_DATA / "corpus" / "thucnews_cnews_subset" / "cnews.val.txt"
    cmd = [sys.executable, "-m", "pretrain.launch", "--model", "electra", "--nproc", "2", "--zero", "2",
           "--steps", str(STEPS), "--corpus", str(corpus), "--run", str(tmp / "run"),
           f"data.clean_dir={tmp / 'clean'}", f"tokenizer.dir={tmp / 'tok'}", "tokenizer.vocab_size=8000",
           "train.log_every=10", f"train.eval_every={STEPS}", f"train.save_every={STEPS}",
           "train.micro_batch_size=8", "train.eval_generate=64"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp


def test_real_text_run_logs_electra_terms_and_learns(real_run):
    """Both losses fall and the RTD numbers are measured over all non-padding tokens.

    40 steps at batch 8 over 2 processes check the learning signal; the win over the
    all-"original" baseline is the next test's.
    """
    records = [json.loads(line) for line in (real_run / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") != "valid"]
    valid = [r for r in records if r.get("split") == "valid"][-1]
    assert train[-1]["step"] == STEPS
    for key in ("mlm_loss", "rtd_loss", "rtd_acc", "rtd_baseline_acc", "rtd_recall"):
        assert key in train[-1], key
    assert train[-1]["mlm_loss"] < train[0]["mlm_loss"] - 0.5, (train[0], train[-1])
    assert train[-1]["rtd_loss"] < train[0]["rtd_loss"], (train[0], train[-1])
    assert train[-1]["loss"] == pytest.approx(train[-1]["mlm_loss"] + 50 * train[-1]["rtd_loss"], rel=1e-4)
    # A share mask_prob of the non-special tokens is masked and most samples differ from the
    # original, so the baseline ("original" everywhere) scores a little over 1 - mask_prob over
    # all non-padding tokens (0.85-0.9 at 15 %).
    mask = load_config(REPO / "configs" / "electra.yaml", []).objective.mask_prob
    assert 1 - mask - 0.05 < valid["rtd_baseline_acc"] < 1 - mask + 0.1, (mask, valid)
    assert valid["rtd_acc"] >= valid["rtd_baseline_acc"] - 0.02, valid


def test_exports_load_and_share_embeddings_after_round_trip(real_run):
    from transformers import AutoTokenizer, ElectraForMaskedLM, ElectraForPreTraining

    export = real_run / "run" / "export"
    disc = ElectraForPreTraining.from_pretrained(export)
    gen = ElectraForMaskedLM.from_pretrained(export / "generator")
    for folder in (export, export / "generator"):
        assert (folder / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(export / "generator")
    assert gen.config.hidden_size * 4 == disc.config.hidden_size
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        assert torch.equal(getattr(gen.electra.embeddings, name).weight, getattr(disc.electra.embeddings, name).weight)
    assert torch.equal(gen.generator_lm_head.weight, disc.electra.embeddings.word_embeddings.weight)
    inputs = tok(["北京时间今天上午，国家队在主场以二比一战胜对手。"], return_tensors="pt")
    assert disc(**inputs).logits.shape == inputs["input_ids"].shape
    assert gen(**inputs).logits.shape[-1] == len(tok)

    # The DeepSpeed checkpoint loads back into one model whose two halves still hold the same module.
    saved = json.loads((real_run / "run" / "export" / "training_step.json").read_text())["step"]
    from pretrain import checkpoint as ckpt
    state = ckpt.read(next((real_run / "run" / "checkpoints" / f"step-{saved:08d}").glob("*model_states.pt")))["module"]
    objective = ElectraObjective(load_config(config_path("electra"), [f"tokenizer.dir={export}"]))
    model = objective.build_model()
    model.load_state_dict(state)
    assert model.generator.electra.embeddings is model.discriminator.electra.embeddings
    assert torch.equal(model.generator.electra.embeddings.word_embeddings.weight,
                       disc.electra.embeddings.word_embeddings.weight)
