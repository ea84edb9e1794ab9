"""`python -m pretrain.release`: verified Hugging Face folders and a model card.

A real tiny T5-PEGASUS run (ZeRO-3, so the checkpoint must be consolidated with
zero_to_fp32) is released and reloaded offline; ELECTRA (both halves), BERT-MLM and
RoFormer folders built by hand stand in for the other objectives' exports.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
FAST = ["train.micro_batch_size=4", "train.max_source_len=64", "train.max_target_len=24", "train.log_every=1",
        "train.eval_every=2", "train.eval_generate=0", "train.eval_batches=1", "train.steps=4",
        "train.save_every=2", "train.warmup_steps=2", "train.zero_stage=3"]


def release(run_dir, *extra, check=True):
    proc = subprocess.run([sys.executable, "-m", "pretrain.release", "--run", str(run_dir), *extra], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory, t5_data):
    run_dir = tmp_path_factory.mktemp("release") / "t5"
    proc = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", "configs/t5-pegasus.yaml",
                           f"run_dir={run_dir}", *t5_data, *FAST], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_t5_release_loads_generates_and_has_a_card(t5_run):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    proc = release(t5_run, "--model", "t5-pegasus", "--skip-eval")
    out = t5_run / "release"
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "README.md", "loss.png"):
        assert (out / name).is_file(), name
    assert "verified" in proc.stdout
    # Loads offline through the Auto classes and generates; same logits as RUN/export.
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    trained = AutoModelForSeq2SeqLM.from_pretrained(t5_run / "export").eval()
    enc = tok(["北京今天举行了一场关于人工智能的讲座。"], return_tensors="pt", return_token_type_ids=False)
    dec = torch.tensor([[model.config.decoder_start_token_id, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(**enc, decoder_input_ids=dec).logits, trained(**enc, decoder_input_ids=dec).logits)
    ids = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert ids.shape[1] > 1
    assert model.generation_config.decoder_start_token_id == tok.cls_token_id
    # The loss plot is a real PNG; the card holds it and the run's numbers.
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "loss.png").stat().st_size > 5000
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "![loss curve](loss.png)" in card
    metrics = [json.loads(l) for l in (t5_run / "metrics.jsonl").read_text().splitlines()]
    last_train = [r for r in metrics if r.get("split") != "valid"][-1]
    last_valid = [r for r in metrics if r.get("split") == "valid"][-1]
    assert f"Final train loss {last_train['loss']:.4f} at step 4" in card
    assert f"final valid loss {last_valid['loss']:.4f} at step 4" in card
    clean = next(o.split("=", 1)[1] for o in open_overrides(t5_run) if o.startswith("data.clean_dir="))
    stats = json.loads(open(os.path.join(clean, "stats.json")).read())
    assert f"read {stats['read']:,} documents, wrote {stats['written']:,}" in card
    assert f"{stats['duplicates_exact']:,} exact" in card
    tok_dir = next(o.split("=", 1)[1] for o in open_overrides(t5_run) if o.startswith("tokenizer.dir="))
    vocab = json.loads(open(os.path.join(tok_dir, "stats.json")).read())["vocab_size"]
    assert f"vocab_size: {vocab}" in card
    lr = __import__("yaml").safe_load((t5_run / "config.yaml").read_text())["train"]["lr"]
    assert "zero_stage: 3" in card and f"lr: {lr}" in card                       # hyperparameters
    assert "**summarization**: not run: skipped (--skip-eval)" in card
    assert "AutoModelForSeq2SeqLM" in card and "## Intended use" in card
    info = json.loads((out / "release.json").read_text())
    assert info["export"]["step"] == 4 and info["folders"][""]["checkpoint_tensors_compared"].split("/")[0] != "0"
    # leakage from the cleaning run's decontamination counts, and every file's checksum
    assert "## Leakage (evaluation-set overlap)" in card and "| evaluation set | checked |" in card
    assert "## Checksums" in card and info["zh_pretrain_release"] is True
    assert f"`model.safetensors` | {(out / 'model.safetensors').stat().st_size:,} |" in card
    assert subprocess.run([sys.executable, "-m", "pretrain.release", "--verify", str(out)], cwd=REPO,
                          capture_output=True, text=True).returncode == 0
    patched = out.with_name("patched")
    shutil.copytree(out, patched)
    data = bytearray((patched / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (patched / "model.safetensors").write_bytes(bytes(data))
    bad = subprocess.run([sys.executable, "-m", "pretrain.release", "--verify", str(patched)], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "model.safetensors: sha256" in bad.stderr


def open_overrides(run_dir):
    """data.clean_dir / tokenizer.dir of a run, from its config.yaml."""
    import yaml
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    return [f"data.clean_dir={raw['data']['clean_dir']}", f"tokenizer.dir={raw['tokenizer']['dir']}"]


def test_missing_export_is_rebuilt_from_the_zero3_checkpoint(t5_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(t5_run, run, ignore=shutil.ignore_patterns("release*", "tensorboard"))
    original = (t5_run / "export" / "model.safetensors").read_bytes()
    shutil.rmtree(run / "export")
    from pretrain.release import release as make_release
    make_release(run, skip_eval=True)                                    # in-process: no interpreter start-up
    info = json.loads((run / "release" / "release.json").read_text())
    assert info["export"]["rebuilt"] and info["export"]["checkpoint"] == "step-00000004"
    from safetensors.torch import load_file
    a, b = load_file(str(run / "release" / "model.safetensors")), load_file(str(t5_run / "export" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert original == (t5_run / "export" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_evaluation_failures_are_recorded_not_fatal(tmp_path):
    from pretrain.release import run_evaluations
    res = run_evaluations(tmp_path, ("sts",), False, str(tmp_path / "absent"), [], 120)
    assert res["sts"].startswith("not run: ") and "absent" in res["sts"]      # the evaluator's own error line


def test_wrong_model_or_missing_run_is_one_line(t5_run, tmp_path, capsys):
    from pretrain.release.__main__ import main
    assert main(["--run", str(t5_run), "--model", "electra", "--skip-eval"]) == 2
    assert "run is MODEL=t5-pegasus, not electra" in capsys.readouterr().err
    assert main(["--run", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ---- other objectives' exports, built by hand with tiny configs ------------------------
def tiny_models(name, vocab_size):
    import transformers as T
    torch.manual_seed(0)
    common = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    if name == "electra":
        disc = T.ElectraForPreTraining(T.ElectraConfig(embedding_size=32, **common))
        gen = T.ElectraForMaskedLM(T.ElectraConfig(embedding_size=32, **{**common, "hidden_size": 16,
                                                                         "intermediate_size": 32}))
        return {"": disc, "generator": gen}
    if name == "mlm-proposal":
        return {"": T.BertForMaskedLM(T.BertConfig(**common))}
    return {"": T.RoFormerForCausalLM(T.RoFormerConfig(embedding_size=32, is_decoder=True, **common))}


@pytest.mark.parametrize("model", ["electra", "mlm-proposal", "roformer-sim"])
def test_other_objective_exports_release_and_load(tmp_path, t5_data, model):
    import transformers as T

    from pretrain.config import config_path, load_config, save_config
    run = tmp_path / model
    tok_dir = next(o.split("=", 1)[1] for o in t5_data if o.startswith("tokenizer.dir="))
    clean = next(o.split("=", 1)[1] for o in t5_data if o.startswith("data.clean_dir="))
    cfg = load_config(config_path(model), [f"run_dir={run}", f"tokenizer.dir={tok_dir}", f"data.clean_dir={clean}"])
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    with open(run / "metrics.jsonl", "w") as fh:
        for step in range(1, 6):
            fh.write(json.dumps({"step": step, "loss": 6.0 - step * 0.5}) + "\n")
        fh.write(json.dumps({"step": 5, "split": "valid", "loss": 3.9}) + "\n")
    tok = T.AutoTokenizer.from_pretrained(tok_dir)
    for sub, m in tiny_models(model, len(tok)).items():
        m.save_pretrained(run / "export" / sub)
        tok.save_pretrained(run / "export" / sub)
    from pretrain.release import release as make_release
    make_release(run, model, skip_eval=True)                             # in-process: no interpreter start-up
    out = run / "release"
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Final train loss 3.5000 at step 5; final valid loss 3.9000 at step 5." in card
    assert re.search(r"\*\*(sts|mlm)\*\*: not run: skipped", card)
    for sub in tiny_models(model, len(tok)):
        folder = out / sub
        config = T.AutoConfig.from_pretrained(folder)
        auto = {"ElectraForPreTraining": T.AutoModelForPreTraining, "ElectraForMaskedLM": T.AutoModelForMaskedLM,
                "BertForMaskedLM": T.AutoModelForMaskedLM, "RoFormerForCausalLM": T.AutoModelForCausalLM}[
            config.architectures[0]]
        loaded = auto.from_pretrained(folder).eval()
        assert type(loaded).__name__ == config.architectures[0]
        reference = auto.from_pretrained(run / "export" / sub).eval()
        enc = T.AutoTokenizer.from_pretrained(folder)(["中文预训练模型"], return_tensors="pt")
        with torch.no_grad():
            assert torch.equal(loaded(**enc).logits, reference(**enc).logits)
        assert f"`{sub or '.'}` | {config.architectures[0]} | {auto.__name__}" in card
