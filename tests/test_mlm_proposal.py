"""MLM with mask-proposal sampling (MAP-Net): packing, unbiasedness by Monte Carlo, gradients, the whole chain.

The unbiasedness tests compare the mean of many sampled estimates with values
computed exactly, on fixed models: a context-free encoder (0 layers, each
position's output depends on its own token only) with several masked units
per row, and a real 2-layer encoder with one masked unit per row. Both
include the 80/10/10 replacement. The unweighted proposal estimate must be
detectably biased in the same setting, so the check has power.
"""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from conftest import REPO
from pretrain.config import ConfigError
from pipeline.typed_config import build
from pretrain import lm_loss
from pretrain.objectives.mlm_proposal import (MaskedLMWithProposal, MaskProposalNet, MLMProposalConfig,
                                              estimate_mlm_loss, mask_slots, pack_rows)


def parse_objective(raw, where="config"):
    return build(MLMProposalConfig, raw, where, "objective.")

V, MASK, LOW = 40, 4, 5          # vocab size, [MASK] id, first id random replacement may use
EASY = torch.arange(LOW, 20)     # tokens the fixed model predicts well (low loss)


def test_pack_rows_units_and_word_cuts():
    rows = pack_rows([[10, 11, 12], [13, 14], [15]], 5, cls_id=2, sep_id=3, pad_id=0)
    assert rows["input_ids"].tolist() == [[2, 10, 11, 12, 3], [2, 13, 14, 3, 0], [2, 15, 3, 0, 0]]
    assert rows["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert rows["unit_ids"].tolist() == [[-1, 0, 1, 2, -1], [-1, 0, 1, -1, -1], [-1, 0, -1, -1, -1]]
    # Documents share a row as separate segments (first-fit decreasing): positions restart, units go on.
    rows = pack_rows([[10, 11], [13], [14, 15]], 9, cls_id=2, sep_id=3, pad_id=0)
    assert rows["input_ids"].tolist() == [[2, 10, 11, 3, 2, 14, 15, 3], [2, 13, 3, 0, 0, 0, 0, 0]]   # longest row
    assert rows["segment_ids"].tolist() == [[0, 0, 0, 0, 2, 2, 2, 2], [1, 1, 1, -1, -1, -1, -1, -1]]
    assert rows["position_ids"].tolist()[0] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert rows["unit_ids"].tolist()[0] == [-1, 0, 1, -1, -1, 2, 3, -1]
    # Whole words: tokens of one word share a unit; a word cut by a piece boundary becomes two units.
    units = pack_rows([[10, 11, 12, 13, 14]], 5, 2, 3, 0, doc_units=[[0, 0, 1, 1, 1]])["unit_ids"]
    assert units.tolist() == [[-1, 0, 0, 1, -1], [-1, 0, 0, -1, -1]]
    assert pack_rows([[1] * 50], 5, 2, 3, 0, max_rows=3)["input_ids"].shape == (3, 5)


def test_objective_section_is_validated():
    assert parse_objective({"sampling": "uniform", "uniform_mix": 0.3}).sampling == "uniform"
    for raw, key in (({"sampling": "importance"}, "objective.sampling"), ({"uniform_mix": 0}, "objective.uniform_mix"),
                     ({"mask_rate": 0.1}, "objective.mask_rate")):
        with pytest.raises(ConfigError) as err:
            parse_objective(raw, "configs/mlm-proposal.yaml")
        assert key in str(err.value) and "\n" not in str(err.value)


def fixed_model(layers: int) -> BertForMaskedLM:
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=32)).eval()
    with torch.no_grad():   # make per-position losses very unequal: EASY tokens are likely
        model.cls.predictions.bias[EASY] += 4.0
    return model


def row(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    easy = EASY[torch.randint(0, len(EASY), (n // 2,), generator=g)]
    hard = torch.randint(20, V, (n - n // 2,), generator=g)
    body = torch.stack([easy, hard], 1).flatten()[:n]
    return torch.cat([torch.tensor([2]), body, torch.tensor([3])]), (body >= 20).float() * 3.0


def expected_token_losses(model, ids: torch.Tensor) -> torch.Tensor:
    """E over the 80/10/10 replacement of each body token's CE when it alone is corrupted (exact)."""
    n = ids.numel() - 2
    out = torch.zeros(n)
    with torch.no_grad():
        for i in range(1, n + 1):
            variants = torch.cat([torch.tensor([MASK, int(ids[i])]), torch.arange(LOW, V)])
            batch = ids.repeat(len(variants), 1)
            batch[:, i] = variants
            ce = F.cross_entropy(model(input_ids=batch).logits[:, i], ids[i].repeat(len(variants)), reduction="none")
            out[i - 1] = 0.8 * ce[0] + 0.1 * ce[1] + 0.1 * ce[2:].mean()
    return out


def mc(model, ids, units, scores, oc, sampling, reps=4000, seed=0):
    batch = ids.repeat(reps, 1)
    res = estimate_mlm_loss(model, batch, torch.ones_like(batch), units.repeat(reps, 1), scores.repeat(reps, 1), oc,
                            MASK, LOW, sampling, torch.Generator().manual_seed(seed))
    est = res["row_estimate"].detach().double()
    plain = (res["drawn_loss"].detach().sum(1) / res["budget"]).double()
    return est.mean().item(), est.std().item() / reps ** 0.5, plain.mean().item(), plain.std().item() / reps ** 0.5


@pytest.mark.parametrize("whole_word", [False, True])
def test_reweighted_estimate_is_unbiased_with_several_masked_units(whole_word):
    """Context-free encoder, k = 3 units of n per row: E[estimate] = (1/n) sum_u E[l_u] exactly."""
    model = fixed_model(layers=0)
    ids, score = row(12)
    token_units = [0, 0, 1, 2, 2, 3, 4, 4, 4, 5, 6, 7] if whole_word else list(range(12))
    units = torch.tensor([-1] + token_units + [-1])
    n_units = max(token_units) + 1
    per_token = expected_token_losses(model, ids)
    unit_loss = torch.zeros(n_units).index_add(0, torch.tensor(token_units), per_token) / \
        torch.zeros(n_units).index_add(0, torch.tensor(token_units), torch.ones(12))
    exact = unit_loss.mean().item()
    scores = torch.cat([torch.zeros(1), score, torch.zeros(1)])
    oc = MLMProposalConfig(mask_prob=3 / n_units, uniform_mix=0.2)
    mean, se, plain, plain_se = mc(model, ids, units, scores, oc, "proposal")
    assert abs(mean - exact) < 4.5 * se, (mean, se, exact)
    assert abs(plain - exact) > 10 * plain_se, (plain, plain_se, exact)   # weights matter: power of the check
    mean_u, se_u, _, _ = mc(model, ids, units, scores, oc, "uniform", seed=1)
    assert abs(mean_u - exact) < 4.5 * se_u, (mean_u, se_u, exact)


def test_reweighted_estimate_is_unbiased_for_single_masking_with_context():
    """Real 2-layer encoder (context matters), one masked token per row: E[estimate] = (1/n) sum_i E[l_i]."""
    model = fixed_model(layers=2)
    ids, score = row(12)
    units = torch.tensor([-1] + list(range(12)) + [-1])
    exact = expected_token_losses(model, ids).mean().item()
    scores = torch.cat([torch.zeros(1), score, torch.zeros(1)])
    oc = MLMProposalConfig(mask_prob=1 / 12, uniform_mix=0.2)
    mean, se, plain, plain_se = mc(model, ids, units, scores, oc, "proposal")
    assert abs(mean - exact) < 4.5 * se, (mean, se, exact)
    assert abs(plain - exact) > 10 * plain_se, (plain, plain_se, exact)


def test_proposal_learns_only_from_its_own_loss():
    torch.manual_seed(0)
    mlm = fixed_model(layers=1).train()
    model = MaskedLMWithProposal(mlm, MaskProposalNet(32, 16, 1, 2, 32), MLMProposalConfig(), MASK, LOW)
    ids, _ = row(12)
    batch = ids.repeat(8, 1)
    units = torch.tensor([-1] + list(range(12)) + [-1]).repeat(8, 1)
    out = model(batch, torch.ones_like(batch), units)
    out["loss"].backward(retain_graph=True)
    assert all(p.grad is None for p in model.proposal.parameters())
    assert mlm.bert.embeddings.word_embeddings.weight.grad is not None
    model.zero_grad(set_to_none=True)
    out["proposal_loss"].backward()
    assert all(p.grad is None for p in mlm.parameters())
    assert model.proposal.out.bias.grad is not None


def test_mask_slots_hold_a_rows_longest_units():
    """Per row, as many head slots as the tokens of its budget longest units (budget = round(p n))."""
    units = torch.tensor([[-1, 0, 0, 1, 2, 2, 2, -1], [-1, 0, 1, 2, 3, -1, -1, -1], [-1] * 8])
    slots = mask_slots(units, 0.5)          # budgets 2 (of 3 units: 3 + 2 tokens), 2 (of 4: 1 + 1), 0
    assert slots.tolist() == [[0, 0, 0, 0, 0, 1, 1], [0, 1, 2, 3, 4, 0, 1]]


@pytest.mark.parametrize("whole_word", [False, True])
@pytest.mark.parametrize("sampling", ["proposal", "uniform"])
def test_head_slots_give_the_boolean_selections_loss_and_gradients(monkeypatch, whole_word, sampling):
    """Off the CPU the LM head runs on the collator's mask_slots, so a GPU step reads no count back:
    the same losses, accuracy and gradients as the CPU's boolean selection, and never a slot too few."""
    g = torch.Generator().manual_seed(3)
    docs, words = [], []
    for n in (5, 9, 14, 3, 20, 7):
        docs.append(torch.randint(LOW, V, (n,), generator=g).tolist())
        lengths = torch.randint(1, 5, (n,), generator=g).tolist()
        words.append([w for w, k in enumerate(lengths) for _ in range(k)][:n])
    batch = pack_rows(docs, 24, 2, 3, 0, doc_units=words if whole_word else None)
    batch["mask_slots"] = mask_slots(batch["unit_ids"], 0.3)
    oc = MLMProposalConfig(mask_prob=0.3, sampling=sampling, whole_word=whole_word)
    torch.manual_seed(0)
    model = MaskedLMWithProposal(fixed_model(layers=1).train(), MaskProposalNet(32, 16, 1, 2, 32), oc, MASK, LOW)
    runs = {}
    for off_cpu in (False, True):
        monkeypatch.setattr(lm_loss, "index_free", lambda device: off_cpu)
        for seed in range(8):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(seed)
            out = model(**batch, generator=torch.Generator().manual_seed(seed))
            total = out["loss"] + out.get("proposal_loss", 0)
            total.backward()
            live = out["live"]
            assert int(live.sum()) == int(out["selected"].sum())          # every selected token has a slot
            keys = ("loss", "plain_loss", "accuracy", "row_estimate", "proposal_loss")
            runs[off_cpu, seed] = ([out[k].detach() for k in keys if k in out]
                                   + [p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert batch["mask_slots"].shape[1] > max(int(x) for x in batch["unit_ids"].ne(-1).sum(1)) * 0.3
    for seed in range(8):
        cpu, gpu = runs[False, seed], runs[True, seed]
        assert len(cpu) == len(gpu) > 6
        for a, b in zip(cpu, gpu):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the whole chain
def launch(tmp, data, flags, *overrides):
    cmd = [sys.executable, "-m", "pretrain.launch", "--model", "mlm-proposal", "--run", str(tmp / "run"), *flags,
           *data, "train.log_every=2", "train.eval_generate=4", "train.warmup_steps=2", "train.lr=2e-3", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_make_pretrain_single_process_exports_bert_masked_lm(tmp_path, t5_data):
    proc = launch(tmp_path, t5_data, ["--steps", "8"], "train.eval_every=4", "train.save_every=8")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") != "valid"]
    valid = [r for r in records if r.get("split") == "valid"]
    for key in ("mlm_loss", "mlm_loss_plain", "proposal_loss", "q_entropy", "max_weight", "masked_frac"):
        assert key in train[-1], key
    assert 0.1 < train[-1]["masked_frac"] <= 0.16 and train[-1]["max_weight"] <= 2.0 + 1e-6   # uniform_mix 0.5
    assert train[-1]["mlm_loss_plain"] < train[0]["mlm_loss_plain"]
    assert valid and {"loss", "mlm_accuracy"} <= set(valid[-1])

    from transformers import AutoModelForMaskedLM, AutoTokenizer
    export = tmp_path / "run" / "export"
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForMaskedLM.from_pretrained(export).eval()
    assert type(model).__name__ == "BertForMaskedLM"
    inputs = tok(["今天上午，市图书馆举办了一场[MASK]统手工艺讲座。"], return_tensors="pt")
    assert model(**inputs).logits.shape[-1] == len(tok)
    ev = subprocess.run([sys.executable, "-m", "pretrain.evaluate", "--task", "mlm", "--model", str(export),
                         "--data", t5_data[0].split("=", 1)[1]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-2000:]
    result = json.loads(ev.stdout)
    assert result["task"] == "mlm" and result["masked_tokens"] > 0 and 0 <= result["accuracy"] <= 1
    assert abs(result["loss"] - valid[-1]["loss"]) < 1.0     # same model, both held out, uniform 15% masks


def test_make_pretrain_two_process_zero2_roformer_whole_word(tmp_path, t5_data):
    proc = launch(tmp_path, t5_data, ["--steps", "4", "--nproc", "2", "--zero", "2"], "train.eval_every=4",
                  "objective.encoder=roformer", "objective.whole_word=true", "train.micro_batch_size=4")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r.get("split") != "valid"][-1]["step"] == 4
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    export = tmp_path / "run" / "export"
    model = AutoModelForMaskedLM.from_pretrained(export)
    assert type(model).__name__ == "RoFormerForMaskedLM"
    assert AutoTokenizer.from_pretrained(export).mask_token == "[MASK]"
    assert (export / "mask_proposal" / "model.safetensors").is_file()
