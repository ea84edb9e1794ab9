"""Foundation: the whole T5-PEGASUS chain on the embedded sample corpus, as `make pretrain` runs it.

clean (Beam) -> vocabulary -> pseudo-summary pairs (Beam) -> tiny T5-PEGASUS through the
DeepSpeed engine (ZeRO-2, CPU, gloo) -> checkpoint -> Hugging Face export; then a second
launch reuses every data stage and resumes from the finished checkpoint.
"""
import json
from pathlib import Path
import subprocess
import sys

import pytest
import torch

from conftest import REPO

from conftest import T5_RUN_STEPS as STEPS
from conftest import launch_t5


@pytest.fixture(scope="module")
def first_run(t5_run):
    return t5_run


def test_run_writes_metrics_checkpoints_and_export(first_run):
    tmp, _ = first_run
    run = tmp / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") != "valid"]
    valid = [r for r in records if r.get("split") == "valid"]
    assert train[-1]["step"] == STEPS
    for key in ("step", "loss", "lr", "tokens_per_s", "grad_norm"):
        assert key in train[0]
    assert train[-1]["loss"] < 0.8 * train[0]["loss"], (train[0]["loss"], train[-1]["loss"])
    assert valid and {"loss", "rouge1", "rouge2", "rougeL"} <= set(valid[-1])
    assert (run / "checkpoints" / f"step-{STEPS:08d}" / "COMPLETE.json").is_file()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (run / "export" / name).is_file(), name
    stats = json.loads((tmp / "clean" / "stats.json").read_text())
    dup = stats["duplicates_exact"] + stats["duplicates_near"]
    assert stats["read"] == stats["written"] + sum(stats["rejected"].values()) + dup
    assert dup > 0 and sum(stats["rejected"].values()) > 0   # the sample corpus plants noise


def test_export_loads_offline_and_generates(first_run):
    tmp, _ = first_run
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    export = tmp / "run" / "export"
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForSeq2SeqLM.from_pretrained(export)
    assert model.config.model_type == "mt5"
    assert not torch.equal(model.lm_head.weight, model.shared.weight)   # untied LM head (mT5)
    # the file says what the checkpoint holds (transformers 5.x still forces the flag on load: #42815)
    assert json.loads((export / "config.json").read_text())["tie_word_embeddings"] is False
    from safetensors.torch import load_file
    assert torch.equal(model.lm_head.weight, load_file(export / "model.safetensors")["lm_head.weight"])
    inputs = tok(["今天上午，市图书馆举办了一场关于传统手工艺的讲座，吸引了许多市民参加。"], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=12)
    assert out.shape[0] == 1 and out.shape[1] > 1
    assert isinstance(tok.decode(out[0], skip_special_tokens=True), str)


def test_second_launch_reuses_stages_and_resumes(first_run):
    tmp, _ = first_run
    before = (tmp / "run" / "metrics.jsonl").read_text()
    proc = launch_t5(tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for stage in ("clean", "vocab", "pairs"):
        assert f"{stage}: up to date" in proc.stderr, proc.stderr[-3000:]
    assert "already at step 60 >= train.steps=60: nothing to train" in proc.stderr
    assert (tmp / "run" / "metrics.jsonl").read_text() == before   # nothing retrained


@pytest.mark.slow   # three launcher subprocesses
def test_bad_model_and_size_stop_with_one_line():
    from pretrain.config import models
    for args, needle in ((["--model", "gpt-9"], "|".join(models())),
                         (["--model", "t5-pegasus", "--size", "nonsense"], "tiny|small|base"),
                         (["--model", "electra", "--size", "huge"], "tiny|small|base")):
        proc = subprocess.run([sys.executable, "-m", "pretrain.launch", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_a_comma_separated_corpus_names_the_part_that_matches_nothing(launcher):
    from pretrain.stages import corpus_specs
    assert corpus_specs(" data/a.jsonl, data/b ,,") == ["data/a.jsonl", "data/b"]
    assert corpus_specs("hf:user/set,config") == ["hf:user/set,config"]
    code, stderr = launcher("--model", "electra", "--prepare-only",
                            "data.corpus=data/sample/news.jsonl,data/sample/nothing-*.jsonl")
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert code != 0 and len(lines) == 1, stderr
    assert "'data/sample/nothing-*.jsonl' matches no file" in lines[0], lines


@pytest.mark.slow
def test_models_keep_their_own_artifacts_and_a_rerun_reuses_everything(tmp_path):
    """make pretrain MODEL=t5-pegasus, then MODEL=electra, then MODEL=t5-pegasus again: the third run
    reuses every stage and the first run's vocabulary is byte-identical afterwards."""
    import hashlib

    roots = [f"data.stages_dir={tmp_path / 'stages'}", f"tokenizer.root={tmp_path / 'artifacts'}"]

    def launch(model):
        proc = subprocess.run([sys.executable, "-m", "pretrain.launch", "--model", model, "--steps", "2",
                               "--run", str(tmp_path / model), *roots, "train.save_every=2", "train.eval_every=2",
                               "train.eval_generate=0", "train.micro_batch_size=4"],
                              cwd=REPO, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # no library notices on every stage (#17.8): Beam's import-time INFO and apitools lines
        assert "apache_beam" not in proc.stderr and "apitools" not in proc.stderr, proc.stderr[-3000:]
        return proc.stderr

    def digest(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}

    launch("t5-pegasus")
    used = json.loads((tmp_path / "t5-pegasus" / "run.json").read_text())["artifacts"]
    vocab_before = digest(Path(used["tokenizer_dir"]))
    # the tiny presets clean the sample the same way: ELECTRA reuses that corpus and vocabulary
    second = launch("electra")
    electra = json.loads((tmp_path / "electra" / "run.json").read_text())["artifacts"]
    assert electra["tokenizer_dir"] == used["tokenizer_dir"] and electra["clean_dir"] == used["clean_dir"]
    assert "clean: up to date, reusing" in second and "vocab: up to date, reusing" in second
    # (another split or corpus gets folders of its own: tests/adversarial/test_training.py, stage keys)
    third = launch("t5-pegasus")
    for stage in ("clean", "vocab", "pairs"):
        assert f"{stage}: up to date, reusing" in third, stage
    assert "building" not in third and "nothing to train" in third
    assert digest(Path(used["tokenizer_dir"])) == vocab_before
