"""Adversarial cases of the training side (issue #16 items 5-9, 11, 13, 14 and #17.4/7): each was a
silent loss, a deletion or a traceback, and must now be a refusal or one line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

ONE_LINE = lambda stderr: [l for l in stderr.splitlines() if l.startswith("error:")]   # noqa: E731


# ---------------------------------------------------------------- stage fingerprints (#16.5)
def test_a_stage_folder_is_current_only_with_its_stamp_and_output(tmp_path):
    from pretrain.stages import STAMP, is_current, run_stage

    out = tmp_path / "clean"
    built = []

    def build():
        out.mkdir(exist_ok=True)
        (out / "manifest.json").write_text(json.dumps({"shards": [len(built)]}))
        built.append(1)

    spec = {"corpus": "x", "v": 1}
    assert run_stage("clean", out, spec, build) is True
    assert run_stage("clean", out, spec, build) is False                 # reused
    (out / "manifest.json").write_text('{"shards": ["written by make data"]}')
    from pretrain.stages import fingerprint
    assert not is_current("clean", out, fingerprint(spec))              # someone else wrote into the folder
    assert run_stage("clean", out, spec, build) is True
    (out / "manifest.json").unlink()                                    # a killed pipeline run cleared it
    assert run_stage("clean", out, spec, build) is True and len(built) == 3
    (out / STAMP).write_text("{broken")
    assert run_stage("clean", out, spec, build) is True


def test_stage_folders_are_keyed_by_their_inputs():
    from pretrain.config import config_path, load_config
    from pretrain.stages import resolve

    t5 = resolve(load_config(config_path("t5-pegasus")))
    electra = resolve(load_config(config_path("electra")))
    again = resolve(load_config(config_path("t5-pegasus")))
    assert t5.data.clean_dir == again.data.clean_dir and t5.tokenizer.dir == again.tokenizer.dir
    # the tiny presets clean the same corpus the same way: one cleaned corpus and vocabulary, reused
    assert t5.data.clean_dir == electra.data.clean_dir and t5.tokenizer.dir == electra.tokenizer.dir
    other = resolve(load_config(config_path("electra"), ["data.valid_fraction=0.02"]))   # another split
    assert other.data.clean_dir != electra.data.clean_dir and other.tokenizer.dir != electra.tokenizer.dir
    assert t5.data.clean_dir.startswith("data/stages/clean-") and t5.tokenizer.dir.startswith("artifacts/tokenizer-")
    small = resolve(load_config(config_path("t5-pegasus"), ["data.corpus=data/sample/news.jsonl"]))
    assert small.data.clean_dir != t5.data.clean_dir and small.data.pairs_dir != t5.data.pairs_dir
    assert resolve(load_config(config_path("t5-pegasus"), ["data.clean_dir=/x/y"])).data.clean_dir == "/x/y"


def test_make_pretrain_set_reaches_the_clean_stage_and_keys_its_folders():
    """SET='k=v ...' on make pretrain: pipeline overrides of the clean stage, in its fingerprint (so the
    cleaned corpus and vocabulary get folders of their own); the run's split stays the run's."""
    from pipeline.typed_config import ConfigError
    from pretrain.config import config_path, load_config
    from pretrain.stages import pipeline_overrides, resolve

    plain = resolve(load_config(config_path("electra")))
    relaxed = resolve(load_config(config_path("electra"), ['data.pipeline_set=["filters.min_chars=2"]']))
    assert relaxed.data.clean_dir != plain.data.clean_dir and relaxed.tokenizer.dir != plain.tokenizer.dir
    over = pipeline_overrides(relaxed.data)
    assert over["filters"] == {"min_chars": 2} and over["output"]["valid_fraction"] == relaxed.data.valid_fraction
    with pytest.raises(ConfigError, match="data.valid_fraction"):
        pipeline_overrides(resolve(load_config(config_path("electra"), ['data.pipeline_set=["output.valid_fraction=0.5"]'])).data)


def test_the_clean_stage_is_keyed_by_the_eval_sets_it_decontaminates_against(tmp_path, monkeypatch):
    """A cleaned corpus built without the eval sets (ZH_SHARED_DATA absent), or against other contents,
    is not reused when they appear or change: its leakage counts would be stale."""
    from pretrain.config import config_path, load_config
    from pretrain.stages import resolve

    def clean_dir():
        return resolve(load_config(config_path("electra"))).data.clean_dir

    shared = tmp_path / "shared"
    (shared / "sts" / "senteval_cn" / "LCQMC").mkdir(parents=True)
    monkeypatch.setenv("ZH_SHARED_DATA", str(shared))
    none = clean_dir()
    (shared / "sts/senteval_cn/LCQMC/LCQMC.test.data").write_text("怎么查看我的借呗额度\t借呗额度在哪看\t1\n", encoding="utf-8")
    one = clean_dir()
    (shared / "sts/senteval_cn/LCQMC/LCQMC.test.data").write_text("怎么查看我的花呗额度\t花呗额度在哪看\t1\n", encoding="utf-8")
    other = clean_dir()
    assert len({none, one, other}) == 3
    assert resolve(load_config(config_path("electra"), ['data.pipeline_set=["decontam.enabled=false"]'])).data.clean_dir \
        not in (none, one, other)


def test_an_unknown_set_key_stops_make_pretrain_before_any_work(tmp_path, launcher):
    code, stderr = launcher("--model", "electra", "--prepare-only", "--set", "filters.min_char=2",
                            f"data.stages_dir={tmp_path}")
    assert code != 0 and len(ONE_LINE(stderr)) == 1, stderr
    assert "unknown key 'filters.min_char'" in stderr and "min_chars" in stderr
    assert not list(tmp_path.iterdir())                     # nothing built


@pytest.mark.slow     # 4-6 s: runs make (the fast tier stays under a minute)
def test_make_pretrain_passes_set_as_separate_arguments(tmp_path):
    """make pretrain SET='k=v ...': each word one --set argument, never shell text (as make data)."""
    stages = tmp_path / "stages"
    stages.mkdir()
    proc = subprocess.run(["make", "-s", "-o", "setup", "-o", ".venv/.setup-stamp", "pretrain", "MODEL=electra",
                           f"RUN={tmp_path}/run", f"ARGS=--prepare-only data.stages_dir={stages}",
                           # make turns $$ into $: the shell would see `touch${IFS}.../p` if it evaluated it
                           f"SET=filters.min_char=2 read.id_field=`touch$${{IFS}}{tmp_path}/p`"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and len(ONE_LINE(proc.stderr)) == 1, proc.stderr
    assert "unknown key 'filters.min_char'" in proc.stderr
    assert not (tmp_path / "p").exists() and not list(stages.iterdir())


# ---------------------------------------------------------------- checkpoints (#16.6)
def _fake_checkpoint(root: Path, step: int, damaged: bool = False) -> Path:
    from pretrain.checkpoint import MARKER, sha256_file, tag_for

    folder = root / tag_for(step)
    folder.mkdir(parents=True)
    (folder / "mp_rank_00_model_states.pt").write_bytes(os.urandom(64))
    files = {"mp_rank_00_model_states.pt": {"size": 64, "sha256": sha256_file(folder / "mp_rank_00_model_states.pt")}}
    (folder / MARKER).write_text(json.dumps({"step": step, "world_size": 1, "files": files}))
    if damaged:
        data = bytearray((folder / "mp_rank_00_model_states.pt").read_bytes())
        data[3] ^= 0xFF
        (folder / "mp_rank_00_model_states.pt").write_bytes(bytes(data))
    return folder


def test_all_damaged_checkpoints_stop_with_one_line(tmp_path):
    from pretrain.checkpoint import CheckpointError, find_latest

    _fake_checkpoint(tmp_path, 10, damaged=True)
    _fake_checkpoint(tmp_path, 20, damaged=True)
    with pytest.raises(CheckpointError) as err:
        find_latest(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "step-00000010" in msg and "step-00000020" in msg and "start over" in msg
    _fake_checkpoint(tmp_path, 5)
    assert find_latest(tmp_path) == ("step-00000005", 5)                # the newest intact one
    assert find_latest(tmp_path / "none") is None                       # no checkpoint at all: a fresh run


def test_pruning_is_by_step_number_and_never_the_newest(tmp_path):
    from pretrain.checkpoint import prune, valid_tags

    for step in (8, 9, 10, 100, 200):
        _fake_checkpoint(tmp_path, step)
    # just wrote step 100 (resumed from 10 while a damaged step 200 lingers): keep 100 and 10
    prune(tmp_path, 100, keep_last=2)
    assert valid_tags(tmp_path) == ["step-00000010", "step-00000100", "step-00000200"]
    _fake_checkpoint(tmp_path, 100_000_000)                             # more digits than the padding
    prune(tmp_path, 100_000_000, keep_last=1)
    assert valid_tags(tmp_path) == ["step-100000000"]


# ---------------------------------------------------------------- releases (#16.7, #16.11)
def test_release_out_replaces_only_a_previous_release(tmp_path):
    from pretrain.release import ReleaseError, _replaceable
    from pretrain.release.verify import MANIFEST

    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    with pytest.raises(ReleaseError, match="not a release written by this project"):
        _replaceable(mine)
    old = tmp_path / "release"
    old.mkdir()
    (old / MANIFEST).write_text(json.dumps({"zh_pretrain_release": True}))
    _replaceable(old)                                                   # no error
    _replaceable(tmp_path / "absent")


def test_verify_release_finds_a_patched_file(tmp_path):
    from pretrain.release.verify import MANIFEST, file_checksums, verify_release

    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 100)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / MANIFEST).write_text(json.dumps({"files": file_checksums(tmp_path)}))
    assert verify_release(tmp_path) == []
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[50] = 1
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    (tmp_path / "extra.bin").write_bytes(b"x")
    problems = verify_release(tmp_path)
    assert any(p.startswith("model.safetensors: sha256") for p in problems) and "extra.bin: not in release.json" in problems


# ---------------------------------------------------------------- the RUN lock (#16.8)
@pytest.mark.slow
def test_run_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    from pretrain.runinfo import run_in_use
    from pretrain.train import RunLock, TrainingError

    lock = RunLock(tmp_path)
    with pytest.raises(TrainingError, match="is in use by a running training"):
        RunLock(tmp_path)
    assert run_in_use(tmp_path).startswith(f"pid {os.getpid()}")
    lock.close()
    assert run_in_use(tmp_path) is None
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pretrain.train import RunLock; "
                               f"lock = RunLock(__import__('pathlib').Path({str(tmp_path)!r})); print('held', flush=True); "
                               "time.sleep(600)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert run_in_use(tmp_path) is not None
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert run_in_use(tmp_path) is None                                  # flock: gone with the process
    RunLock(tmp_path).close()


# ---------------------------------------------------------------- shell injection (#16.9)
@pytest.mark.slow
def test_make_values_never_reach_a_shell(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    pwned = tmp_path / "pwned"
    cases = [
        ["make", "-s", "data", "CORPUS=data/sample/news.jsonl", f"OUT={tmp_path}/o; touch {pwned} #"],
        ["make", "-s", "pretrain", f"MODEL=t5-pegasus' ; touch {pwned} #"],
        ["make", "-s", "pretrain", "MODEL=t5-pegasus", f"ARGS=--help; touch {pwned} #"],
        ["make", "-s", "pretrain", "MODEL=t5-pegasus", f"RUN=$(touch {pwned})", "STEPS=x"],
    ]
    for cmd in cases:
        subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert not pwned.exists(), cmd
    assert (tmp_path / f"o; touch {pwned} #" / "manifest.json").is_file()   # the odd name is just a folder name


# ---------------------------------------------------------------- per-run identity (#17.4)
def test_changing_the_corpus_or_size_of_a_run_is_refused_before_any_work(tmp_path):
    from pretrain.config import ConfigError, config_path, load_config
    from pretrain.launch import check_existing_run
    from pretrain.runinfo import identity, write_identity
    from pretrain.stages import resolve

    run = tmp_path / "run"
    run.mkdir()
    cfg = resolve(load_config(config_path("t5-pegasus"), [f"run_dir={run}"]))
    write_identity(run, identity(cfg))
    check_existing_run(cfg)                                             # same inputs: fine
    for override, word in (("data.corpus=data/sample/news.jsonl", "CORPUS"), ("tokenizer.vocab_size=999", "vocabulary")):
        other = resolve(load_config(config_path("t5-pegasus"), [f"run_dir={run}", override]))
        with pytest.raises(ConfigError) as err:
            check_existing_run(other)
        assert word in str(err.value) and "start a new run" in str(err.value) and "\n" not in str(err.value)
    small = resolve(load_config(config_path("t5-pegasus"), [f"run_dir={run}"], size="small"))
    with pytest.raises(ConfigError, match="SIZE"):
        check_existing_run(small)
    _fake_checkpoint(run / "checkpoints", 4)              # a ZeRO-0 checkpoint (no optimizer partitions)
    check_existing_run(cfg)                               # any NPROC, and ZeRO-2 with AdamW: resharded
    adafactor = resolve(load_config(config_path("t5-pegasus"), [f"run_dir={run}", "train.optimizer=adafactor"]))
    with pytest.raises(ConfigError, match="Adafactor under ZeRO-0") as err:
        check_existing_run(adafactor)                     # the one layout change that is refused
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- through the real trainer
FAST = ["train.micro_batch_size=4", "train.max_source_len=48", "train.max_target_len=16", "train.log_every=1",
        "train.eval_every=1000", "train.eval_generate=0", "train.eval_batches=1", "train.warmup_steps=2"]


def train(run_dir, data, *extra, config="configs/t5-pegasus.yaml"):
    cmd = [sys.executable, "-m", "pretrain.train", "--config", config, f"run_dir={run_dir}", *data, *FAST, *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def metrics(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_every_checkpoint_damaged_stops_and_keeps_the_run(tmp_path, t5_data):
    run = tmp_path / "run"
    first = train(run, t5_data, "train.steps=4", "train.save_every=2")
    assert first.returncode == 0, first.stderr[-3000:]
    before = (run / "metrics.jsonl").read_text()
    for folder in (run / "checkpoints").glob("step-*"):
        victim = max(folder.glob("*.pt"), key=lambda p: p.stat().st_size)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    again = train(run, t5_data, "train.steps=4", "train.save_every=2")
    assert again.returncode == 2
    errors = ONE_LINE(again.stderr)
    assert len(errors) == 1 and "every checkpoint" in errors[0] and "step-00000004" in errors[0], again.stderr[-2000:]
    assert (run / "metrics.jsonl").read_text() == before                # nothing mixed in
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000004"]


def test_steps_at_or_below_the_current_step_and_changed_steps_say_so(tmp_path, t5_data):
    run = tmp_path / "run"
    assert train(run, t5_data, "train.steps=4", "train.save_every=2", "train.schedule=linear").returncode == 0
    same = train(run, t5_data, "train.steps=3")
    assert same.returncode == 0 and "already at step 4 >= train.steps=3: nothing to train" in same.stderr
    longer = train(run, t5_data, "train.steps=6", "train.save_every=2", "train.schedule=linear")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "train.steps changed from 4 to 6: the linear learning-rate schedule now ends at step 6" in longer.stderr
    assert [r["step"] for r in metrics(run) if r.get("split") != "valid"] == list(range(1, 7))


def test_objective_config_errors_are_one_line(tmp_path, t5_data):
    proc = train(tmp_path / "run", [o for o in t5_data if not o.startswith("data.pairs_dir")], "train.steps=2",
                 "objective.pair_file=", "objective.cosent_weight=1.0", config="configs/roformer-sim.yaml")
    errors = ONE_LINE(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1 and "cosent_weight" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, t5_data):
    mnt = tmp_path / "small"
    mnt.mkdir()
    # A real filesystem that fills up: a tmpfs with room for one checkpoint (~50 MB with the sample's
    # vocabulary) but not two.
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80M", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run = mnt / "run"
        proc = train(run, t5_data, "train.steps=30", "train.save_every=2", "train.keep_last=100")
        errors = ONE_LINE(proc.stderr)
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
        assert "no space left on" in errors[0] and "MB free" in errors[0] and "step-00000002 is intact" in errors[0]
        from pretrain.checkpoint import find_latest, verify
        tag, step = find_latest(run / "checkpoints")
        assert verify(run / "checkpoints" / tag) is None and step >= 2
        assert not list((run / "checkpoints").glob("*.partial"))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
