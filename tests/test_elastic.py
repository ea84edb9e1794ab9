"""Resume on another number of processes and ZeRO stage (#20.4), through the real trainer (CPU, gloo).

The sample traces (train.trace_samples) give every trained sample's global position: across the
change of world size the positions run 0, 1, 2, ... with none missing or repeated, and the first
epoch holds every sample of the training split exactly once.
"""
import json
import math
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO
from test_resume import command, run

SMALL = ["train.micro_batch_size=4", "train.max_source_len=64", "train.max_target_len=24", "train.log_every=1",
         "train.eval_every=1000", "train.eval_generate=0", "train.eval_batches=1", "train.trace_samples=true",
         "train.warmup_steps=5"]


def trained(run_dir) -> list[tuple[int, object]]:
    """(global position, sample id) of every sample in the run's traces, by position."""
    rows = []
    for path in (run_dir / "trace").glob("rank-*.jsonl"):
        for line in path.read_text().splitlines():
            step = json.loads(line)
            rows += list(zip(step["pos"], step["ids"]))
    return sorted(rows)


def assert_each_sample_once_per_epoch(rows, every_id):
    assert [pos for pos, _ in rows] == list(range(len(rows)))          # no position skipped or repeated
    epoch = [i for _, i in rows[:len(every_id)]]
    assert len(rows) >= len(every_id) and sorted(map(str, epoch)) == sorted(map(str, every_id))


def setting(overrides, key):
    return next(o.partition("=")[2] for o in overrides if o.startswith(f"{key}="))


def split_size(folder, split="train") -> int:
    return sum(e["documents"] for e in json.loads((folder / "manifest.json").read_text())["shards"] if e["split"] == split)


def launch(run_dir, data, nproc, steps):
    cmd = [sys.executable, "-m", "pretrain.launch", "--model", "t5-pegasus", "--nproc", str(nproc), "--steps", str(steps),
           "--run", str(run_dir), "--save-every", "5", *data, *SMALL]
    return cmd


def test_make_pretrain_killed_on_two_processes_resumes_on_one_with_each_sample_once(tmp_path, t5_data):
    """The acceptance run: NPROC=2 killed after a checkpoint, resumed with NPROC=1 (on the fly, ZeRO-2)."""
    from pretrain.data import list_shards, read_shard
    from pretrain.runinfo import run_in_use

    every_id = [r["id"] for shard in list_shards(setting(t5_data, "data.pairs_dir"), "train") for r in read_shard(shard)]
    steps = 10 + math.ceil((len(every_id) - 10 * 8) / 4) + 1          # 10 steps of 2 x 4, then 1 x 4 past the epoch
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(launch(run_dir, t5_data, 2, steps), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    target = run_dir / "checkpoints" / "step-00000010"
    while not target.is_dir():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)     # make's group: the launcher and torchrun; the workers get SIGTERM
    proc.wait()
    deadline = time.time() + 120
    while run_in_use(run_dir):                # ... save a checkpoint at their next step and exit
        assert time.time() < deadline, "the killed run's workers are still running"
        time.sleep(0.2)
    resumed = subprocess.run(launch(run_dir, t5_data, 1, steps), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resharded" in resumed.stderr and "2 processes, ZeRO-2 -> 1 processes, ZeRO-2" in resumed.stderr
    assert_each_sample_once_per_epoch(trained(run_dir), every_id)
    steps_logged = [json.loads(l)["step"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
                    if "split" not in json.loads(l)]
    assert steps_logged == list(range(1, steps + 1))


def reshard_check(mode, ref, nproc, folder, data, *extra):
    script = [str(REPO / "tests" / "reshard_check.py"), mode, str(ref), "configs/t5-pegasus.yaml", str(folder),
              *data, *SMALL, *extra]
    cmd = [sys.executable, *script] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_port", str(29600 + os.getpid() % 300), *script]
    return run(cmd).stdout


def rank_reports(stdout: str) -> list[dict]:
    """Each rank's JSON report (two ranks may write theirs onto one line of the shared stdout)."""
    return [json.loads(m) for m in re.findall(r'\{"rank"[^{}]*\}', stdout)]


def test_token_path_from_one_process_zero0_to_two_processes_zero3(tmp_path, t5_tokens):
    """1 -> 2 processes and ZeRO-0 -> ZeRO-3 on token shards: the resumed engine holds exactly what
    DeepSpeed's own loader reads from the checkpoint, and no sample is skipped or repeated."""
    run_dir = tmp_path / "run"
    n = split_size(Path(setting(t5_tokens, "data.tokens_dir")))
    first = ["train.zero_stage=0", "train.steps=16", "train.save_every=16"]
    run(command(run_dir, t5_tokens, 1, [*SMALL, *first]))
    folder = run_dir / "checkpoints" / "step-00000016"
    reshard_check("native", tmp_path / "ref.pt", 1, folder, t5_tokens, "train.zero_stage=0")
    out = rank_reports(reshard_check("reshard", tmp_path / "ref.pt", 2, folder, t5_tokens,
                                     "train.zero_stage=3"))
    assert len(out) == 2 and all(o["worst"] == 0.0 and o["same_steps"] and o["same_lr"] for o in out), out
    steps = 16 + math.ceil((n - 16 * 4) / 8) + 1
    proc = run(command(run_dir, t5_tokens, 2, [*SMALL, "train.zero_stage=3", f"train.steps={steps}",
                                               "train.save_every=1000"]))
    assert "1 processes, ZeRO-0 -> 2 processes, ZeRO-3" in proc.stderr
    assert_each_sample_once_per_epoch(trained(run_dir), list(range(n)))


def test_zero2_on_two_processes_reshards_exactly_into_zero0_on_one(tmp_path, t5_data):
    """The other direction of the consolidation: two ZeRO-2 partitions into one plain optimizer."""
    run_dir = tmp_path / "run"
    run(command(run_dir, t5_data, 2, [*SMALL, "train.zero_stage=2", "train.steps=3", "train.save_every=3"]))
    folder = run_dir / "checkpoints" / "step-00000003"
    reshard_check("native", tmp_path / "ref.pt", 2, folder, t5_data, "train.zero_stage=2")
    out = rank_reports(reshard_check("reshard", tmp_path / "ref.pt", 1, folder, t5_data,
                                     "train.zero_stage=0"))
    assert len(out) == 1 and out[0]["worst"] == 0.0 and out[0]["same_steps"] and out[0]["same_lr"], out


def test_bf16_zero0_master_weights_reshard_exactly_to_two_processes_zero0_and_zero2(tmp_path, t5_data):
    """bf16 under ZeRO-0 keeps its fp32 masters in the optimizer (pretrain.master_weights): a
    reshard reads them from the checkpoint and writes them into the new layout's masters, for a
    plain ZeRO-0 engine and for ZeRO-2's partitions."""
    bf16 = [*SMALL, "train.precision=bf16"]
    run_dir = tmp_path / "run"
    run(command(run_dir, t5_data, 1, [*bf16, "train.zero_stage=0", "train.steps=3", "train.save_every=3"]))
    folder = run_dir / "checkpoints" / "step-00000003"
    reshard_check("native", tmp_path / "ref.pt", 1, folder, t5_data, "train.zero_stage=0", "train.precision=bf16")
    for zero in (0, 2):
        out = rank_reports(reshard_check("reshard", tmp_path / "ref.pt", 2, folder, t5_data,
                                         f"train.zero_stage={zero}", "train.precision=bf16"))
        assert len(out) == 2 and all(o["worst"] == 0.0 and o["same_steps"] and o["same_lr"] for o in out), (zero, out)
