"""SLURM: the rendered batch script on a real (one-host, two-node) SLURM cluster.

The cluster (tests/slurm_cluster.py) is munged + slurmctld + two slurmd started
under a temp dir; it installs the Debian packages when missing and skips only
where SLURM cannot run (no root, no apt). A 2-node CPU ZeRO-2 run must finish
with its checkpoint, metrics and export; a second run gets the preemption signal
(`scancel --signal=USR1 --batch`), checkpoints, requeues itself and resumes, and
its per-step sample ids must equal the uninterrupted run's: none lost or repeated.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO
from slurm_cluster import SlurmCluster, SlurmUnavailable

STEPS = 16
FAST = ["train.micro_batch_size=4", "train.max_source_len=64", "train.max_target_len=24", "train.log_every=1",
        "train.eval_every=8", "train.eval_generate=0", "train.eval_batches=1", "train.trace_samples=true",
        f"train.steps={STEPS}", "train.save_every=8", "train.warmup_steps=2", "train.zero_stage=2"]


def render(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pretrain.slurm", *args], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=120)


# ---- rendering (no cluster needed) -------------------------------------------------------
@pytest.mark.slow
def test_render_quotes_every_value_and_rejects_injection(tmp_path):
    evil = f"data.corpus=a b;$(touch {tmp_path}/pwned)'\"`id`"
    proc = render("--model", "t5-pegasus", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu",
                  "--time", "1-00:00:00", "--run", str(tmp_path / "run"), "--dry-run", evil)
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=1-00:00:00", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@120", f"#SBATCH --output={tmp_path}/run/slurm-%j.out"):
        assert line in script.splitlines(), line
    assert "NCCL_DEBUG" in script and "scontrol requeue" in script and not (tmp_path / "run").exists()
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    # The argument arrays evaluate to exactly what was given, and nothing runs.
    arrays = "\n".join(l for l in script.splitlines() if re.match(r"^(TRAIN|LAUNCH)_ARGS=\(", l))
    out = subprocess.run(["bash", "-c", arrays + '\nprintf "%s\\0" "${TRAIN_ARGS[@]}"'], capture_output=True,
                         text=True).stdout.split("\0")[:-1]
    assert out == ["--config", "configs/t5-pegasus.yaml", "--size", "tiny", evil, f"run_dir={tmp_path}/run"]
    assert not (tmp_path / "pwned").exists()
    bad = {("--partition", "gpu\n#SBATCH --uid=0"): "PARTITION", ("--time", "1:00; id"): "TIME",
           ("--nodes", "2; id"): "NODES", ("--run", str(tmp_path / "a b")): "RUN",
           ("--model", "gpt"): "MODEL", ("--sbatch-option", "--account=x y"): "sbatch option"}
    for args, word in bad.items():
        proc = render("--model", "t5-pegasus", *args, "--dry-run") if args[0] != "--model" else \
            render(*args, "--dry-run")
        assert proc.returncode == 2 and word in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)


@pytest.mark.slow
def test_make_slurm_dry_run_reads_values_without_shell(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(["make", "-s", "slurm", "MODEL=t5-pegasus", "NODES=3", "GPUS_PER_NODE=0", "TIME=30",
                           "DRY_RUN=1"], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --nodes=3" in proc.stdout and "#SBATCH --ntasks-per-node=1" in proc.stdout
    assert "#SBATCH --time=30" in proc.stdout and "profile cpu" in proc.stdout
    proc = subprocess.run(["make", "-s", "slurm", "MODEL=t5-pegasus", f"PARTITION=x'; touch {tmp_path}/p; '",
                           "DRY_RUN=1"], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0 and "PARTITION" in proc.stderr and not (tmp_path / "p").exists()


# ---- a real cluster -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        c = SlurmCluster(tmp_path_factory.mktemp("slurm"), nodes=2).start()
    except SlurmUnavailable as exc:
        pytest.skip(f"SLURM cannot run here: {exc}")
    yield c
    c.stop()


def submit(cluster, run_dir, data, *extra):
    proc = render("--model", "t5-pegasus", "--nodes", "2", "--gpus-per-node", "0", "--run", str(run_dir),
                  "--warn-seconds", "60", *extra, *data, *FAST, env=cluster.env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def trace(run_dir, rank):
    return [json.loads(l) for l in (run_dir / "trace" / f"rank-{rank}.jsonl").read_text().splitlines()]


def train_steps(run_dir):
    return [json.loads(l)["step"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(l).get("split") != "valid"]


def job_log(run_dir, job):
    return (run_dir / f"slurm-{job}.out").read_text(errors="replace")


@pytest.fixture(scope="module")
def straight_run(cluster, t5_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("slurm-runs") / "straight"
    job = submit(cluster, run_dir, t5_data)
    state = cluster.wait(job, timeout=400)
    assert state == "COMPLETED", job_log(run_dir, job)[-4000:]
    return run_dir, job


def test_two_node_zero2_run_completes(cluster, straight_run):
    run_dir, job = straight_run
    info = cluster.job(job)
    assert info["ExitCode"] == "0:0" and info["NumNodes"] == "2" and info["NodeList"] == "zn[1-2]"
    log = job_log(run_dir, job)
    assert "2 node(s) [zn[1-2]], 2 task(s), master 127.0.0.1:" in log and "data stages ready" in log
    assert train_steps(run_dir) == list(range(1, STEPS + 1))
    assert [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r.get("split") == "valid"] == [8, 16]
    r0, r1 = trace(run_dir, 0), trace(run_dir, 1)                       # two ranks, one per node
    assert len(r0) == len(r1) == STEPS and all(not set(a["ids"]) & set(b["ids"]) for a, b in zip(r0, r1))
    final = run_dir / "checkpoints" / f"step-{STEPS:08d}"
    assert (final / "COMPLETE.json").is_file()
    assert sorted(p.name for p in final.glob("zero_pp_rank_*_optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert json.loads((run_dir / "export" / "training_step.json").read_text())["step"] == STEPS


def test_preemption_signal_checkpoints_requeues_and_resumes_exactly(cluster, straight_run, t5_data, tmp_path):
    reference, _ = straight_run
    run_dir = tmp_path / "preempted"
    job = submit(cluster, run_dir, t5_data, "--no-prepare")
    deadline = time.time() + 300
    while not ((run_dir / "trace" / "rank-0.jsonl").is_file()
               and len(trace(run_dir, 0)) >= 2):
        assert cluster.state(job) in ("PENDING", "RUNNING"), job_log(run_dir, job)[-3000:]
        assert time.time() < deadline, "training never started"
        time.sleep(0.1)
    cluster.run("scancel", "--signal=USR1", "--batch", job)           # what SLURM sends at --signal=B:USR1@T
    deadline = time.time() + 180
    while cluster.job(job).get("Restarts") != "1" or cluster.state(job) != "PENDING":
        assert cluster.state(job) in ("RUNNING", "PENDING", "REQUEUED", "COMPLETING"), job_log(run_dir, job)[-3000:]
        assert time.time() < deadline, "job was not requeued"
        time.sleep(0.2)
    # SLURM holds a requeued job back for ~2 minutes (its BeginTime); start it now, but only
    # once both nodes have finished cleaning up the first run (else the launch can fail).
    deadline = time.time() + 120
    while set(cluster.run("sinfo", "-h", "-N", "-o", "%T").split()) != {"idle"}:
        assert time.time() < deadline, cluster.run("sinfo", "-N")
        time.sleep(0.2)
    # slurmd rejects a relaunch whose credential dates from the same second as the requeue's
    # revocation ("Job credential revoked"): that is what SLURM's own hold-back avoids.
    time.sleep(3)
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    state = cluster.wait(job, timeout=400)
    log = job_log(run_dir, job)
    assert state == "COMPLETED", (log[-3000:] + "\n" + str(cluster.job(job)) + "\n"
                                  + (cluster.root / "log" / "slurmctld.log").read_text()[-3000:])
    saved = int(re.search(r"saving checkpoint at step (\d+) and exiting", log).group(1))
    assert 2 <= saved < STEPS
    assert "checkpoint saved; requeueing" in log and "(restart 1)" in log
    assert f"resumed from {run_dir}/checkpoints/step-{saved:08d} (step {saved})" in log
    # No step lost or repeated: the same samples at every step as the uninterrupted run.
    for rank in (0, 1):
        got, want = trace(run_dir, rank), trace(reference, rank)
        assert [r["step"] for r in got] == list(range(1, STEPS + 1))
        assert [r["ids"] for r in got] == [r["ids"] for r in want]
    assert train_steps(run_dir) == list(range(1, STEPS + 1))
    assert (run_dir / "checkpoints" / f"step-{STEPS:08d}" / "COMPLETE.json").is_file()


def test_release_of_the_slurm_run_loads(straight_run):
    """The ZeRO-2, 2-rank run releases (weights checked against the checkpoint's module states)."""
    from pretrain.release import release
    run_dir, _ = straight_run
    release(run_dir, "t5-pegasus", skip_eval=True)
    info = json.loads((run_dir / "release" / "release.json").read_text())
    compared, total = map(int, info["folders"][""]["checkpoint_tensors_compared"].split("/"))
    assert compared == total and info["export"]["step"] == STEPS
