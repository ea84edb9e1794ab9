"""Function-preserving growth (pretrain.growth / pretrain.grow) and a growth schedule in a DeepSpeed run.

Every family is built with transformers classes, perturbed away from its initialization
(non-unit LayerNorm affines), grown, and compared on Chinese text: logits and sentence
vectors must agree within 1e-4 in fp32.
"""
import json
import re
import signal
import subprocess
import sys

import pytest
import torch
from transformers import (BertConfig, BertForMaskedLM, BertTokenizerFast, ElectraConfig, ElectraForMaskedLM,
                          ElectraForPreTraining, MT5Config, MT5ForConditionalGeneration, RoFormerConfig,
                          RoFormerForMaskedLM)

from conftest import REPO, SHARED_DATA
from pretrain.surgery import GrowthError, GrowthStep, grow, grow_module, max_difference
from pretrain.models import untie_lm_head

TOL = 1e-4
FALLBACK_TEXT = ["今天上午，市图书馆举办了一场传统手工艺讲座。", "这家酒店的服务很好，房间也很干净。",
                 "数学是研究数量、结构以及空间的学科。", "我们可以无损放大一个模型吗？"]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Real news text when the shared data is there (else our own sentences), with a character vocabulary
    of those texts: growth is about the layers, and a small vocabulary keeps these unit tests fast."""
    news = SHARED_DATA / "corpus" / "thucnews_cnews_subset" / "cnews.val.txt"
    if news.is_file():
        lines = news.read_text(encoding="utf-8").splitlines()[:200:50]
        texts = [line.split("\t", 1)[1][:120] for line in lines]
    else:
        texts = FALLBACK_TEXT
    chars = sorted({c for t in texts for c in t})
    path = tmp_path_factory.mktemp("growth") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars), encoding="utf-8")
    tok = BertTokenizerFast(vocab=str(path))
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
    return len(tok), enc["input_ids"], enc["attention_mask"]


def perturbed(model):
    """Move weights away from init so no special value (unit LayerNorm, zero bias) hides a bug."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if "norm" in name.lower() else 0.02
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def build(family: str, vocab: int):
    torch.manual_seed(0)
    enc = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
    if family == "bert":
        return BertForMaskedLM(BertConfig(**enc))
    if family == "roformer":
        return RoFormerForMaskedLM(RoFormerConfig(**enc))
    if family == "electra-discriminator":
        return ElectraForPreTraining(ElectraConfig(embedding_size=16, **enc))
    if family == "electra-generator":
        return ElectraForMaskedLM(ElectraConfig(**{**enc, "hidden_size": 16, "num_attention_heads": 2,
                                                   "intermediate_size": 24}, embedding_size=16))
    model = MT5ForConditionalGeneration(MT5Config(vocab_size=vocab, d_model=32, d_ff=40, d_kv=8, num_heads=4,
                                                  num_layers=2, num_decoder_layers=2, decoder_start_token_id=2))
    untie_lm_head(model)
    return model


FAMILIES = ["bert", "roformer", "electra-discriminator", "electra-generator", "mt5"]
OPERATIONS = {
    "depth": GrowthStep(layers=4),
    "depth-at": GrowthStep(layers=5, at=[1, 1, 2]),
    "width": GrowthStep(hidden=64, ffn=100),
    "depth+width": GrowthStep(layers=3, hidden=64, ffn=96),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_growth_preserves_outputs(family, batch):
    vocab, ids, mask = batch
    small = perturbed(build(family, vocab))
    for name, step in OPERATIONS.items():
        big = grow(small, step)
        assert type(big) is type(small)
        assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())
        diff = max_difference(small, big, ids, mask)
        assert diff["logits"] <= TOL and diff["sentence"] <= TOL, (family, name, diff)
    if family == "mt5":   # T5 heads grow freely (relative-position bias copied with its head)
        assert max(max_difference(small, grow(small, GrowthStep(heads=6)), ids, mask).values()) <= TOL


def test_width_copies_are_not_identical(batch):
    vocab, ids, mask = batch
    small = perturbed(build("bert", vocab))
    big = grow(small, GrowthStep(hidden=64))
    q = big.bert.encoder.layer[0].attention.self.query.weight
    assert not torch.allclose(q[:, :32], q[:, 32:])          # split with noise: copies will diverge
    torch.testing.assert_close(q[:, :32] + q[:, 32:], small.bert.encoder.layer[0].attention.self.query.weight
                               .repeat(2, 1), atol=1e-6, rtol=0)


def test_inexact_requests_fail_with_one_line(batch):
    vocab, _, _ = batch
    small = build("bert", vocab)
    for step, words in [(GrowthStep(hidden=48), "integer multiple"), (GrowthStep(layers=1), "shrink"),
                        (GrowthStep(hidden=64, heads=4), "head size"), (GrowthStep(layers=3, at=[0, 1]), "positions")]:
        with pytest.raises(GrowthError, match=words) as err:
            grow(small, step)
        assert "\n" not in str(err.value)


class ElectraPair(torch.nn.Module):
    """What an ELECTRA objective holds: generator and discriminator sharing embeddings."""

    def __init__(self, vocab):
        super().__init__()
        self.generator = build("electra-generator", vocab)
        self.discriminator = build("electra-discriminator", vocab)
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight


def test_electra_halves_grow_together_and_keep_sharing(batch):
    vocab, ids, mask = batch
    pair = ElectraPair(vocab)
    perturbed(pair)
    small_g, small_d = [m for m in (pair.generator, pair.discriminator)]
    grown = grow_module(pair, GrowthStep(layers=3, hidden=64, ffn=96))
    assert grown.discriminator.config.hidden_size == 64 and grown.generator.config.hidden_size == 32
    assert grown.generator.config.num_hidden_layers == 3
    shared = grown.discriminator.electra.embeddings.word_embeddings.weight
    assert grown.generator.electra.embeddings.word_embeddings.weight is shared
    assert grown.generator.generator_lm_head.weight is shared
    for small, big in ((small_g, grown.generator), (small_d, grown.discriminator)):
        assert max(max_difference(small, big, ids, mask).values()) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("family", ["roformer", "mt5"])
def test_grow_cli_on_exported_folder(family, batch, tmp_path):
    from pretrain import grow as cli
    vocab = SHARED_DATA / "vocab" / "bert_chinese_vocab.txt"
    if not vocab.is_file():
        pytest.skip("needs the shared vocabulary for a tokenizer")
    tok = BertTokenizerFast(vocab=str(vocab))
    src, dst = tmp_path / "src", tmp_path / "dst"
    small = perturbed(build(family, len(tok)))
    small.save_pretrained(src)
    tok.save_pretrained(src)
    assert cli.main([str(src), str(dst), "--layers", "3", "--hidden", "64"]) == 0
    big = type(small).from_pretrained(dst).eval()
    assert json.loads((dst / "growth.json").read_text())["max_abs_diff"] <= TOL
    _, ids, mask = batch
    assert max(max_difference(small, big, ids, mask).values()) <= TOL
    assert cli.main([str(src), str(tmp_path / "bad"), "--hidden", "40"]) == 2


# ------------------------------------------------------------ growth schedule inside a DeepSpeed run
FAST = ["train.micro_batch_size=4", "train.max_source_len=48", "train.max_target_len=16", "train.log_every=1",
        "train.eval_every=1000", "train.eval_generate=0", "train.eval_batches=1", "train.steps=16",
        "train.save_every=10", "train.warmup_steps=2", "train.lr=2e-3", "arch.num_layers=1",
        "arch.num_decoder_layers=1", "growth=[{at_step: 6, layers: 2}]"]


def test_growth_schedule_in_deepspeed_run_survives_kill_and_resume(tmp_path, t5_data):
    from test_resume import kill_after_checkpoint
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from pretrain.config import load_config
    from pretrain.objectives.t5_pegasus import T5PegasusObjective

    run_dir = tmp_path / "grow"
    cmd = [sys.executable, "-m", "pretrain.train", "--config", "configs/t5-pegasus.yaml", f"run_dir={run_dir}",
           *t5_data, *FAST]
    assert kill_after_checkpoint(cmd, run_dir, 10) == -signal.SIGKILL       # killed after the growth
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") != "valid"]
    assert [r["step"] for r in train] == list(range(1, 17))
    loss = {r["step"]: r["loss"] for r in train}
    assert sum(loss[s] for s in (14, 15, 16)) / 3 < sum(loss[s] for s in (5, 6)) / 2   # still going down
    config = json.loads((run_dir / "export" / "config.json").read_text())
    assert config["num_layers"] == 2 and config["num_decoder_layers"] == 2

    # The inserted blocks learned: rebuild them as grown at step 6 and compare with the export.
    cfg = load_config("configs/t5-pegasus.yaml", [f"run_dir={run_dir}", *t5_data, *FAST])
    small = T5PegasusObjective(cfg).build_model()
    small.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "checkpoints"),
                                                                   tag="step-00000006"), strict=False)
    start = grow(small, GrowthStep(layers=2), seed=cfg.train.seed + 6)
    final = MT5ForConditionalGeneration.from_pretrained(run_dir / "export")
    for stack in ("encoder", "decoder"):
        new_block = dict(getattr(start, stack).block[1].named_parameters())
        for name, p in getattr(final, stack).block[1].named_parameters():
            assert (p - new_block[name]).abs().max() > 1e-4, (stack, name)   # moved from its start
        o = getattr(final, stack).block[1].layer[0].SelfAttention.o.weight
        assert o.abs().max() > 1e-3                                          # started at zero

    # make release after growth: the export is rebuilt from the (grown) checkpoint and verified.
    import shutil
    shutil.rmtree(run_dir / "export")
    rel = subprocess.run([sys.executable, "-m", "pretrain.release", "--run", str(run_dir), "--skip-eval"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert rel.returncode == 0, rel.stderr[-3000:]
    assert "rebuilding it from checkpoint step-00000016" in rel.stderr
    released = MT5ForConditionalGeneration.from_pretrained(run_dir / "release")
    assert released.config.num_layers == 2
    for name, p in final.state_dict().items():
        assert torch.equal(p, released.state_dict()[name]), name
    assert subprocess.run([sys.executable, "-m", "pretrain.release", "--verify", str(run_dir / "release")],
                          cwd=REPO, capture_output=True, text=True, timeout=120).returncode == 0


# ------------------------------------------------------------ bert2BERT AKI, growth points by loss slope
def test_aki_takes_new_units_from_the_next_block(batch):
    vocab, ids, mask = batch
    small = perturbed(build("bert", vocab))
    big = grow(small, GrowthStep(hidden=64, ffn=96, method="aki"), noise=0.0)
    w = lambda m, i: m.bert.encoder.layer[i].intermediate.dense.weight.detach()
    old = small.bert.encoder.layer
    # new FFN units (rows 48..95) of block 0 are block 1's units, widened like everything else (columns split)
    torch.testing.assert_close(w(big, 0)[48:, :32] * 2, w(small, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(w(big, 0)[:48, :32] * 2, w(small, 0), atol=1e-6, rtol=0)
    torch.testing.assert_close(w(big, 1)[48:, :32] * 2, w(small, 1), atol=1e-6, rtol=0)   # the top block: itself
    q = big.bert.encoder.layer[0].attention.self.query.weight.detach()
    torch.testing.assert_close(q[32:, :32] * 2, old[1].attention.self.query.weight.detach(), atol=1e-6, rtol=0)
    fpi = max_difference(small, grow(small, GrowthStep(hidden=64, ffn=96), noise=0.0), ids, mask)["logits"]
    aki = max_difference(small, big, ids, mask)["logits"]
    assert fpi <= TOL < aki          # AKI trades exactness for copies that differ from the start


def test_slope_rule_grows_when_the_loss_flattens():
    from pretrain.growth import slope_due
    rule = GrowthStep(when="slope", window=10, threshold=0.01)
    falling = [(s, 10.0 - 0.1 * s) for s in range(1, 41)]           # 1 %+ per step: keep training small
    flat = [(s, 5.0 + 0.001 * (s % 2)) for s in range(1, 41)]
    assert not slope_due(rule, falling, 40)
    assert slope_due(rule, flat, 40)
    assert not slope_due(rule, flat, 15)                              # two full windows first
    assert not slope_due(rule, flat, 40, since=25)                    # ... after the last growth
    assert slope_due(GrowthStep(when="slope", window=10, threshold=0.01, max_step=30), falling, 30)


def test_slope_entries_are_validated_and_resolved_from_the_run(tmp_path, tiny_data):
    from pretrain.config import ConfigError, load_config
    from pretrain.growth import Tracker, architecture_at, resolved_steps, schedule
    from pretrain.objectives.mlm_proposal import MLMProposalObjective

    def cfg(growth):
        return load_config(REPO / "configs" / "mlm-proposal.yaml",
                           [*tiny_data, f"run_dir={tmp_path}", "train.steps=100", f"growth={growth}"])
    for bad, words in (("[{when: slope, layers: 4}]", "window > 0"),
                       ("[{when: slope, window: 5, threshold: 0.1, at_step: 9, layers: 4}]", "chosen by the run"),
                       ("[{when: slope, window: 5, threshold: 0.1, layers: 3}, {at_step: 50, layers: 4}]",
                        "when: slope too")):
        with pytest.raises(ConfigError, match=words):
            cfg(bad)
    c = cfg("[{when: slope, window: 5, threshold: 0.01, layers: 3}, {when: slope, window: 5, threshold: 0.01, "
            "layers: 4}]")
    steps = schedule(c)
    assert [s.at_step for s in steps] == [0, 0]                       # open until the run decides
    tracker = Tracker(c, steps, rank=0)
    for step in range(1, 31):
        tracker.observe(step, 6.0 if step > 12 else 9.0 - 0.2 * step)
        if tracker.due(step):
            break
    # flat from step 13: windows 13-17 and 18-22 are the first two full flat ones
    assert steps[0].at_step == step == 22 and steps[1].at_step == 0
    assert resolved_steps(tmp_path) == [22]
    assert [s.at_step for s in schedule(c)] == [22, 0]                # what resume and export read
    obj = MLMProposalObjective(c)
    assert architecture_at(c, obj, 22, schedule(c)).mlm.config.num_hidden_layers == 2
    assert architecture_at(c, obj, 23, schedule(c)).mlm.config.num_hidden_layers == 3


def test_activation_checkpointing_gives_the_same_gradients(batch):
    from pretrain.engine import checkpoint_activations
    vocab, ids, mask = batch
    grads = []
    for checkpointing in (False, True):
        model = build("bert", vocab).train()
        if checkpointing:
            checkpoint_activations(model)
            assert model.is_activation_checkpointing
        model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-5)


def test_growth_in_bf16_at_zero0_carries_the_adam_state_of_the_fp32_masters(tmp_path, t5_data):
    """bf16 under ZeRO-0 keeps weights and moments in fp32 masters (pretrain.master_weights): growth
    reads them there (DeepSpeed's own ZeRO-0 wrapper carried none: 'carried for 0 tensors')."""
    run_dir = tmp_path / "grow-bf16"
    fast = [o for o in FAST if not o.startswith(("train.steps=", "train.save_every="))]
    cmd = [sys.executable, "-m", "pretrain.train", "--config", "configs/t5-pegasus.yaml", f"run_dir={run_dir}",
           *t5_data, *fast, "train.steps=8", "train.save_every=100", "train.precision=bf16", "train.zero_stage=0"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    carried = re.search(r"Adam state carried for (\d+) tensors, started for (\d+)", proc.stderr)
    assert carried and int(carried[1]) > 0 and int(carried[2]) > 0, proc.stderr[-2000:]
    config = json.loads((run_dir / "export" / "config.json").read_text())
    assert config["num_layers"] == 2
