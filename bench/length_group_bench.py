"""Does length grouping (``data.length_group``) pay for T5-PEGASUS? Loss per step and per second.

Grouping sorts each window of the shuffled pairs by source length, so micro-batches pad little
and a step is cheaper; but a micro-batch then holds pairs of one length only. This runs the
default T5-PEGASUS tiny recipe (``make pretrain MODEL=t5-pegasus``, same corpus, stages reused)
for each seed three ways and reads the validation loss from ``RUN/metrics.jsonl``:

  plain      data.length_group=0 (the default), the preset's 300 steps
  grouped    data.length_group=W, 300 steps: the loss per step
  equal-time data.length_group=0 for the steps that take as long as the grouped run did (its
             wall time x 300 / the plain run's): the loss at the same training time

    .venv/bin/python bench/length_group_bench.py [--seeds 42,1,2] [--window 256]
Writes bench/results/length_group.json and prints a markdown table. Timings move with load: run
it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def run(out: Path, name: str, *overrides: str) -> dict:
    env = {**os.environ, "MODEL": "t5-pegasus", "RUN": str(out / name), "ARGS": " ".join(overrides)}
    proc = subprocess.run(["make", "-s", "pretrain"], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name}: make pretrain failed: {proc.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") != "valid"]
    valid = [r for r in rows if r.get("split") == "valid"]
    # training seconds: each window's samples (steps x micro-batch) / samples_per_s (start-up and
    # evaluation excluded; one process)
    micro = yaml.safe_load((out / name / "config.yaml").read_text())["train"]["micro_batch_size"]
    seconds = sum((r["step"] - p["step"]) * micro / r["samples_per_s"] for p, r in zip([{"step": 0}] + train, train))
    return {"valid": {r["step"]: r["loss"] for r in valid}, "train_seconds": seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="42,1,2")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300, help="the tiny preset's steps")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra override for every run (e.g. train.cpu_dropout=false: torch's dropout masks, "
                         "as the figures in BENCHMARKS.md were measured); repeatable")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "length_group.json"))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="length-group-"))
    res = {"window": args.window, "set": args.set, "load_avg_start": os.getloadavg(), "seeds": {}}
    print("| seed | plain: valid loss (train s) | grouped: valid loss (train s) | equal-time plain: steps, valid loss |")
    print("|---|---|---|---|")
    for seed in args.seeds.split(","):
        s = [f"train.seed={seed}", *args.set]
        plain = run(work, f"plain-{seed}", "data.length_group=0", *s)
        grouped = run(work, f"grouped-{seed}", f"data.length_group={args.window}", *s)
        steps = round(args.steps * grouped["train_seconds"] / plain["train_seconds"])
        equal = run(work, f"equal-{seed}", "data.length_group=0", *s, f"train.steps={steps}")
        res["seeds"][seed] = {"plain": plain, "grouped": grouped, "equal_time": {**equal, "steps": steps}}
        last = lambda r: r["valid"][max(r["valid"])]   # noqa: E731
        print(f"| {seed} | {last(plain):.4f} ({plain['train_seconds']:.0f}) | {last(grouped):.4f} "
              f"({grouped['train_seconds']:.0f}) | {steps}, {last(equal):.4f} |", flush=True)
    res["load_avg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
