"""Soak test: random kill -9 / SIGTERM points over pipeline and training runs (issue #16).

    .venv/bin/python bench/soak.py [--train-cases 40] [--pipeline-cases 100] [--seed 0]

Training: a reference tiny T5-PEGASUS run (12 steps, a checkpoint every 3) records the loss of
every step. Each case starts the same run in a fresh folder, sends SIGKILL or SIGTERM at a
random moment, resumes (up to 3 interruptions), and checks that the finished run logged every
step exactly once with bit-identical losses, and that its export exists.

Pipeline: a reference `python -m pipeline` run on the sample corpus. Each case kills a run into
a fresh output folder at a random moment, reruns it, and checks that manifest.json and
stats.json equal the reference and that read == written + rejected + duplicates.

Writes bench/results/soak.json (cases tried, records lost, resumes identical).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
TRAIN = ["train.micro_batch_size=4", "train.max_source_len=48", "train.max_target_len=16", "train.log_every=1",
         "train.eval_every=1000", "train.eval_generate=0", "train.steps=12", "train.save_every=3",
         "train.warmup_steps=2", "train.trace_samples=true", "train.zero_stage=2"]


def run_killed(cmd: list[str], kill_after: float | None = None, sig=signal.SIGKILL) -> int:
    """Run cmd; if kill_after is given and it is still running then, send sig to its process group."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, sig)
        return proc.wait()


def run_train(run_dir: Path, data: list[str], kill_after: float | None = None, sig=signal.SIGKILL) -> int:
    cmd = [PY, "-m", "pretrain.train", "--config", "configs/t5-pegasus.yaml", f"run_dir={run_dir}", *data, *TRAIN]
    return run_killed(cmd, kill_after, sig)


def losses(run_dir: Path) -> list:
    trace = run_dir / "trace" / "rank-0.jsonl"
    return [(r["step"], r["loss"]) for r in map(json.loads, trace.read_text().splitlines())] if trace.is_file() else []


def soak_training(cases: int, rng: random.Random, work: Path) -> dict:
    data_proc = subprocess.run([PY, "-m", "pretrain.launch", "--model", "t5-pegasus", "--prepare-only",
                                f"data.clean_dir={work / 'clean'}", f"tokenizer.dir={work / 'tok'}",
                                f"data.pairs_dir={work / 'pairs'}"], cwd=REPO, capture_output=True, text=True)
    assert data_proc.returncode == 0, data_proc.stderr[-2000:]
    data = [f"data.clean_dir={work / 'clean'}", f"tokenizer.dir={work / 'tok'}", f"data.pairs_dir={work / 'pairs'}"]
    t0 = time.perf_counter()
    assert run_train(work / "reference", data) == 0
    duration = time.perf_counter() - t0
    reference = losses(work / "reference")
    out = {"cases": 0, "interruptions": 0, "sigkill": 0, "sigterm": 0, "identical": 0, "failures": []}
    for case in range(cases):
        run = work / f"case-{case}"
        for _ in range(rng.randint(1, 3)):
            sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
            run_train(run, data, kill_after=rng.uniform(2.0, duration), sig=sig)
            out["interruptions"] += 1
            out["sigkill" if sig == signal.SIGKILL else "sigterm"] += 1
        rc = run_train(run, data)
        got = losses(run)
        steps = [s for s, _ in got]
        ok = rc == 0 and got == reference and steps == list(range(1, 13)) and (run / "export" / "model.safetensors").is_file()
        out["cases"] += 1
        out["identical"] += ok
        if not ok:
            out["failures"].append({"case": case, "rc": rc, "steps": steps[:20]})
        shutil.rmtree(run, ignore_errors=True)
        print(f"train case {case}: {'identical' if ok else 'DIFFERENT'}", flush=True)
    return out


def run_pipeline(out_dir: Path, kill_after: float | None = None, sig=signal.SIGKILL) -> int:
    return run_killed([PY, "-m", "pipeline", "--input", "data/sample/*.jsonl", "--output", str(out_dir)], kill_after, sig)


def soak_pipeline(cases: int, rng: random.Random, work: Path) -> dict:
    t0 = time.perf_counter()
    assert run_pipeline(work / "ref") == 0
    duration = time.perf_counter() - t0
    ref_manifest = (work / "ref" / "manifest.json").read_text()
    ref_stats = json.loads((work / "ref" / "stats.json").read_text())
    out = {"cases": 0, "identical": 0, "records_lost": 0, "failures": []}
    for case in range(cases):
        target = work / f"p-{case}"
        run_pipeline(target, kill_after=rng.uniform(0.5, duration), sig=rng.choice([signal.SIGKILL, signal.SIGTERM]))
        rc = run_pipeline(target)
        stats = json.loads((target / "stats.json").read_text()) if (target / "stats.json").is_file() else {}
        same = rc == 0 and (target / "manifest.json").read_text() == ref_manifest and \
            {k: v for k, v in stats.items() if k != "elapsed_s"} == {k: v for k, v in ref_stats.items() if k != "elapsed_s"}
        accounted = stats.get("read", -1) == stats.get("written", 0) + sum(stats.get("rejected", {}).values()) + \
            stats.get("duplicates_exact", 0) + stats.get("duplicates_near", 0)
        out["cases"] += 1
        out["identical"] += same and accounted
        out["records_lost"] += max(0, ref_stats["written"] - stats.get("written", 0))
        if not (same and accounted):
            out["failures"].append({"case": case, "rc": rc})
        shutil.rmtree(target, ignore_errors=True)
        print(f"pipeline case {case}: {'identical' if same and accounted else 'DIFFERENT'}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-cases", type=int, default=40)
    ap.add_argument("--pipeline-cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        result = {"pipeline": soak_pipeline(args.pipeline_cases, rng, work),
                  "training": soak_training(args.train_cases, rng, work)}
    (REPO / "bench" / "results" / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if not result["pipeline"]["failures"] and not result["training"]["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
