"""Downstream fine-tuning at equal pretraining compute: ELECTRA vs MLM (uniform) vs MLM (learned proposal) vs scratch.

1. Real unlabeled text from ../shared/data/corpus with every evaluation text left out:
   news articles (minus the 36 that open with a THUCNews headline), Wikipedia, ChID passages,
   e-commerce reviews (minus the hotel category), CSL abstracts, Sogou news. Headlines, CMRC,
   C3, IFLYTEK and the sentiment sets are not in it. One clean + vocabulary stage for all runs.
2. FLOPs per optimizer step of each objective, measured by the real trainer
   (`python -m pretrain.launch`): a short calibration run logs ``flops_per_s`` and
   ``samples_per_s`` over the same window, so flops/step = flops_per_s / samples_per_s x batch.
   That is the trainer's own count: an objective's ``train_flops`` where it has one, else
   6 x parameters x tokens.
3. The budget is ELECTRA's ``--electra-steps`` steps; each MLM run gets the steps that spend
   the same FLOPs. Same corpus, vocabulary, tiny architecture, batch, lr, schedule and seed.
4. Each export and the scratch twin (the MLM-uniform export's config, random init) are
   fine-tuned by `pretrain.evaluation.finetune` on THUCNews titles, LCQMC and CMRC 2018 with
   3 seeds; test roles are only scored. Differences vs scratch: 95% paired bootstrap over
   test rows (seeds averaged).

Writes bench/results/finetune.json and prints markdown tables (accuracy/F1 only; no timings).
Run: nice -n 10 .venv/bin/python bench/finetune_bench.py [--electra-steps 500] [--seeds 0,1,2]
     [--tasks thucnews_titles,lcqmc,cmrc2018] [--work runs/bench-finetune] [-o steps=400 ...]
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from sts_bench import write_jsonl  # noqa: E402

from pretrain.evaluate import parse_options  # noqa: E402
from pretrain.evaluation import finetune  # noqa: E402
from pretrain.evaluation.suite import difference, spread  # noqa: E402

SHARED = Path(os.environ.get("ZH_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "bench" / "results" / "finetune.json"
PY = sys.executable
# One pretraining recipe for every objective: the tiny preset at ELECTRA-small's batch (128 x 128
# tokens; below it the tiny discriminator stays on the constant answer), amp-bf16, one process.
RECIPE = ["train.micro_batch_size=128", "train.max_source_len=128", "train.lr=1e-3", "train.precision=amp-bf16",
          "train.zero_stage=0", "train.seed=0", "tokenizer.vocab_size=30000"]
MODELS = {   # name -> (launcher model, extra overrides)
    "electra": ("electra", []),
    "mlm-uniform": ("mlm-proposal", ["objective.sampling=uniform"]),
    "mlm-proposal": ("mlm-proposal", ["objective.sampling=proposal"]),
}
# Fine-tuning budget per task (the same for every model and seed); test rows capped for time.
FINETUNE = {"thucnews_titles": {"steps": 300, "max_train": 0, "max_test": 2000},
            "lcqmc": {"steps": 300, "max_train": 0, "max_test": 2000},
            "cmrc2018": {"steps": 300, "max_train": 0, "max_test": 0}}


def build_corpus(out: Path) -> dict[str, int]:
    """Unlabeled real text with no evaluation set's text in it (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    c = SHARED / "corpus"
    titles = {line.split("\t")[0].strip() for f in ("dev.txt", "test.txt")
              for line in open(c / "thucnews_titles" / f, encoding="utf-8")}
    long_titles = [t for t in titles if len(t) >= 8]

    def news():
        for line in open(c / "thucnews_cnews_subset" / "cnews.val.txt", encoding="utf-8"):
            text = line.split("\t", 1)[-1]
            if not any(t in text[:60] for t in long_titles):
                yield text

    def jsonl(path, key):
        return (json.loads(line)[key] for line in open(path, encoding="utf-8"))

    def sogou():
        text = (c / "sogou_news_smarty" / "news_sohusite_xml.smarty.utf8.dat").read_text(encoding="utf-8")
        return (part.split("</content>")[0] for part in text.split("<content>")[1:])

    zipped = zipfile.ZipFile(c / "sophonplus_reviews" / "online_shopping_10_cats.zip")
    shopping = next(n for n in zipped.namelist() if n.endswith(".csv"))
    sources = {
        "news": news(),
        "zhwiki": (t for f in ("wiki_00_a.jsonl", "wiki_00_b.jsonl") for t in jsonl(c / "zhwiki_sample" / f, "text")),
        "chid": (t.replace("#idiom#", "") for t in jsonl(c / "fewclue" / "chid_unlabeled.json", "content")),
        "eprstmt": jsonl(c / "fewclue" / "eprstmt_unlabeled.json", "sentence"),
        "csldcp": jsonl(c / "fewclue" / "csldcp_test_public.json", "content"),
        "sogou": sogou(),
        "shopping": (r["review"] for r in csv.DictReader(io.TextIOWrapper(zipped.open(shopping), encoding="utf-8"))
                     if r.get("cat") != "酒店"),
    }
    return {name: write_jsonl(out / f"{name}.jsonl", texts) for name, texts in sources.items()}


def launch(model: str, run: Path, steps: int, overrides: list[str], log: Path) -> None:
    cmd = [PY, "-m", "pretrain.launch", "--model", model, "--size", "tiny", "--run", str(run), "--steps", str(steps),
           *overrides, f"train.warmup_steps={max(1, steps // 10)}", f"train.log_every={min(steps, 50)}",
           f"train.eval_every={steps}", f"train.save_every={steps}"]
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n  see {log}")


def flops_per_step(run: Path) -> float:
    """The trainer's FLOPs per optimizer step, from the last logged window of metrics.jsonl."""
    rec = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
           if line.strip() and '"split"' not in line][-1]
    config = (run / "config.yaml").read_text()
    batch = next(int(line.split(":")[1]) for line in config.splitlines() if line.strip().startswith("micro_batch_size:"))
    accum = next((int(line.split(":")[1]) for line in config.splitlines() if line.strip().startswith("grad_accum:")), 1)
    return rec["flops_per_s"] / rec["samples_per_s"] * batch * accum


def fine_tune_all(exports: dict[str, tuple[Path, str]], tasks: list[str], seeds: list[int], options: dict,
                  cache: Path) -> dict:
    """Every (task, model, seed) fine-tune; each result is kept in ``cache`` so a stopped bench resumes."""
    results = {}
    for task in tasks:
        budget = {**FINETUNE.get(task, {}), **options}
        for name, (export, init) in exports.items():
            runs = []
            for seed in seeds:
                path = cache / task / f"{name}-seed{seed}.json"
                key = {"export": str(export), "weights": (export / "model.safetensors").stat().st_mtime_ns,
                       "init": init, "budget": budget}
                saved = json.loads(path.read_text()) if path.is_file() else {}
                if saved.get("key") != key:
                    saved = {"key": key, "result": finetune.run(str(export), None, task=task, init=init, seed=seed,
                                                                per_example=True, progress=False, **budget)}
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(saved, ensure_ascii=False))
                runs.append(saved["result"])
            results.setdefault(task, {})[name] = runs
            print(f"  {task} {name}: {[round(r['test'][r['metric']], 2) for r in runs]}", file=sys.stderr, flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / "runs" / "bench-finetune"))
    ap.add_argument("--electra-steps", type=int, default=500, help="ELECTRA's steps: the FLOPs budget of every run")
    ap.add_argument("--calibration-steps", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tasks", default="thucnews_titles,lcqmc,cmrc2018")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for pretraining and fine-tuning "
                    "(1 holds up far better on an oversubscribed machine)")
    ap.add_argument("--option", "-o", action="append", default=[], help="fine-tuning option for every task")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"shared data folder {SHARED} is absent (set ZH_SHARED_DATA)", file=sys.stderr)
        return 2
    work = Path(args.work)
    torch.set_num_threads(args.threads)
    recipe = [*RECIPE, f"train.num_threads={args.threads}"]
    corpus = build_corpus(work / "corpus")
    data = [f"data.corpus={work / 'corpus'}/*.jsonl", f"data.clean_dir={work / 'clean'}", f"tokenizer.dir={work / 'tok'}"]
    subprocess.run([PY, "-m", "pretrain.launch", "--model", "electra", "--prepare-only", *data, *recipe], cwd=REPO, check=True)

    per_step = {}
    for name, (model, extra) in MODELS.items():
        cal = work / "calibrate" / name
        if not (cal / "metrics.jsonl").is_file():
            launch(model, cal, args.calibration_steps, [*data, *recipe, *extra], work / f"calibrate-{name}.log")
        per_step[name] = flops_per_step(cal)
    budget = per_step["electra"] * args.electra_steps
    steps = {name: max(1, round(budget / f)) for name, f in per_step.items()}
    exports = {}
    for name, (model, extra) in MODELS.items():
        run = work / "runs" / name
        if not (run / "export" / "config.json").is_file():
            launch(model, run, steps[name], [*data, *recipe, *extra], work / f"pretrain-{name}.log")
        exports[name] = (run / "export", "pretrained")
    exports["scratch"] = (work / "runs" / "mlm-uniform" / "export", "scratch")

    seeds = [int(s) for s in args.seeds.split(",")]
    tasks = [t for t in args.tasks.split(",") if t]
    with contextlib.redirect_stdout(sys.stderr):
        results = fine_tune_all(exports, tasks, seeds, parse_options(args.option), work / "finetune")

    summary = {"corpus_documents": corpus, "recipe": recipe, "flops_per_step": per_step, "pretrain_steps": steps,
               "budget_flops": budget, "seeds": seeds, "finetune": {}}
    for task, by_model in results.items():
        metric = by_model["scratch"][0]["metric"]
        entry = {"metric": metric, "n": by_model["scratch"][0]["n"], "recipe": by_model["scratch"][0]["recipe"]}
        for name, runs in by_model.items():
            entry[name] = {"test": spread([r["test"][metric] for r in runs]),
                           "dev": spread([r["dev"][metric] for r in runs]),
                           **({"em": spread([r["test"]["em"] for r in runs])} if metric == "f1" else {})}
            if name != "scratch":
                entry[name]["vs_scratch"] = difference(runs, by_model["scratch"])
        # The question of #21: does the learned proposal pay off against uniform masking?
        entry["proposal_vs_uniform"] = difference(by_model["mlm-proposal"], by_model["mlm-uniform"])
        summary["finetune"][task] = entry
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=1, ensure_ascii=False))

    print(f"\nEqual pretraining compute: {budget:.3g} FLOPs each (trainer count); steps "
          + ", ".join(f"{k} {v}" for k, v in steps.items()) + f"; tiny models, {len(seeds)} fine-tuning seeds\n")
    print("| task (test metric) | test rows | ELECTRA | MLM uniform | MLM proposal | scratch twin | "
          "ELECTRA - scratch [95% CI] | uniform - scratch | proposal - scratch | proposal - uniform |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for task, e in summary["finetune"].items():
        cells = [f"{e[m]['test']['mean']:.2f} ± {e[m]['test']['std']:.2f}" for m in ("electra", "mlm-uniform", "mlm-proposal", "scratch")]
        diffs = [e[m]["vs_scratch"] for m in ("electra", "mlm-uniform", "mlm-proposal")] + [e["proposal_vs_uniform"]]
        print(f"| {task} ({e['metric']}) | {e['n']['test']} | " + " | ".join(cells) + " | "
              + " | ".join(f"{d['delta']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" for d in diffs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
