"""What each model's default run (``make pretrain MODEL=m``, nothing else) costs and shows (#17.8).

For every model: wall time of the whole command on this machine (stages that are already built
are reused, as on a second run; ``--fresh-stages`` is not offered: the stage folders are shared
with the user's runs), and from ``RUN/metrics.jsonl`` the first and last validation loss plus
the objective's own held-out measure (ELECTRA: rtd_acc vs the all-original baseline and rtd_auc;
RoFormer-Sim: retrieval accuracy; T5-PEGASUS: ROUGE-L of generated summaries; the MLM objectives
log only their loss).

    .venv/bin/python bench/defaults_bench.py [--models electra,t5-pegasus] [--out /tmp/defaults]
Writes bench/results/defaults.json and prints a markdown table. Runs go to --out (a fresh
folder per model; an existing one is refused by the launcher, so pass a new --out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = ("t5-pegasus", "t5-span", "electra", "mlm-proposal", "bert-wwm", "roformer-sim")
SHOW = ("rtd_acc", "rtd_baseline_acc", "rtd_auc", "retrieval_acc", "rougeL", "mlm_acc")   # what validation logs


def run(model: str, out: Path) -> dict:
    env = {**os.environ, "MODEL": model, "RUN": str(out / model)}
    start = time.perf_counter()
    proc = subprocess.run(["make", "-s", "pretrain"], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["exit %d" % proc.returncode], "seconds": seconds}
    rows = [json.loads(line) for line in (out / model / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r.get("split") == "valid"]
    last = valid[-1]
    return {"seconds": seconds, "steps": last["step"], "valid_first": valid[0]["loss"], "valid_last": last["loss"],
            "valid_steps": [r["step"] for r in valid], **{k: last[k] for k in SHOW if k in last}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="defaults-"))
    results = {"load_avg_start": os.getloadavg(), "models": {}}
    print("| model | wall time (s) | steps | valid loss first -> last | objective's held-out measure |")
    print("|---|---:|---:|---|---|")
    for model in args.models.split(","):
        r = results["models"][model] = run(model, out)
        if "error" in r:
            print(f"| {model} | {r['seconds']:.0f} | - | failed: {r['error'][0]} | |")
            continue
        shown = ", ".join(f"{k}={r[k]:.3f}" for k in SHOW if k in r)
        print(f"| {model} | {r['seconds']:.0f} | {r['steps']} | {r['valid_first']:.3f} -> {r['valid_last']:.3f} "
              f"(steps {r['valid_steps'][0]}..{r['valid_steps'][-1]}) | {shown} |")
    # --models a,b re-measures those rows only: the file keeps the other models' earlier rows
    path = REPO / "bench" / "results" / "defaults.json"
    earlier = json.loads(path.read_text()).get("models", {}) if path.is_file() else {}
    for row in results["models"].values():
        row["load_avg_start"] = results["load_avg_start"]
    path.write_text(json.dumps({**results, "models": {**earlier, **results["models"]}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
