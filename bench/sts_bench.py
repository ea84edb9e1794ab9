"""RoFormer-Sim on the Chinese STS sets: pretrained vs randomly initialized, same architecture, vocabulary, pooling.

1. Real text: the shared corpus mix (news, Wikipedia, reading comprehension,
   reviews, app descriptions; ../shared/data/corpus) as JSONL, through the
   project's own stages (Beam clean -> word+char vocabulary), as `make pretrain` does.
2. Similar pairs: the STS *valid* files (development data). Rows i % 5 != 0 of each
   file are the pair files (objective.pair_file: label 1 / STS-B 4-5 = similar pair,
   label 0 / STS-B 0-1 = hard negative); rows i % 5 == 0 are held out as a dev set
   (the only thing the recipe was tuned on). The *test* files are never trained or tuned on.
3. Training through `python -m pretrain.launch` (what `make pretrain MODEL=roformer-sim`
   runs) at tiny size: UniLM seq2seq + in-batch contrastive with hard negatives (the files'
   label-0 rows and PAWS-style word swaps of the anchors) + BART noise + CoSENT on the
   labeled rows (one file per batch). Every row of a batch is a labeled pair
   (pair_file_ratio 1.0): the corpus builds the vocabulary. amp-bf16, ZeRO-0, one process.
4. `python -m pretrain.evaluate --task sts -o baseline=true` on the held-out dev rows and
   on the test files: Spearman per set for the trained export and for a random init of
   the same config (seed 0), same pooling.

Writes bench/results/sts.json and prints a markdown table.
Run: .venv/bin/python bench/sts_bench.py [--steps 1500] [--seed 42] [--max-examples 0] [--work runs/bench-sts]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pretrain.evaluation.sts import TASKS  # noqa: E402

SHARED = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))
STS = SHARED / "sts" / "senteval_cn"
RESULTS = REPO / "bench" / "results" / "sts.json"
PY = sys.executable
# The training recipe on top of configs/roformer-sim.yaml (tiny preset); see the module docstring.
RECIPE = ["train.micro_batch_size=32", "train.max_source_len=32", "train.max_target_len=32", "train.lr=1e-3",
          "train.log_every=20", "train.eval_batches=1", "train.precision=amp-bf16", "train.zero_stage=0",
          "objective.max_sentence_chars=40",
          "objective.pair_file_ratio=1.0", "objective.pair_negative_ratio=0.3", "objective.pair_file_balanced=true",
          "objective.pooling=first-last-avg", "objective.cosent_weight=1.0", "objective.cosent_rows=32",
          "objective.cosent_one_file=true", "objective.swap_negative_prob=0.5",
          "tokenizer.vocab_size=30000", "data.valid_fraction=0.02"]


def write_jsonl(path: Path, texts) -> int:
    """One {"id", "text"} record per non-empty text; an existing file is kept (the clean stage keys on mtime)."""
    if path.is_file():
        return sum(1 for _ in open(path, encoding="utf-8"))
    n, tmp = 0, path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for text in texts:
            text = (text or "").strip()
            if text:
                fh.write(json.dumps({"id": f"{path.stem}-{n}", "text": text}, ensure_ascii=False) + "\n")
                n += 1
    tmp.rename(path)
    return n


def build_corpus(out: Path) -> dict[str, int]:
    """About 34 MB of real unlabeled text from ../shared/data/corpus, one JSONL file per source."""
    out.mkdir(parents=True, exist_ok=True)
    c = SHARED / "corpus"

    def lines(path):
        return open(path, encoding="utf-8")

    def jsonl(path, key):
        return (json.loads(line)[key] for line in lines(path))

    def column(rows, key):
        return (r[key] for r in rows)

    zipped = zipfile.ZipFile(c / "sophonplus_reviews" / "online_shopping_10_cats.zip")
    shopping_csv = next(n for n in zipped.namelist() if n.endswith(".csv"))
    sources = {
        "thucnews": (line.split("\t", 1)[1] for line in lines(c / "thucnews_cnews_subset" / "cnews.val.txt") if "\t" in line),
        "titles": (line.split("\t")[0] for f in ("dev.txt", "test.txt") for line in lines(c / "thucnews_titles" / f)),
        "zhwiki": jsonl(c / "zhwiki_sample" / "wiki_00_a.jsonl", "text"),
        "c3": ("\n".join(doc[0]) for f in ("c3-m-train.json", "c3-m-dev.json", "c3-d-dev.json")
               for doc in json.load(lines(c / "c3" / f))),
        "cmrc": (p["context"] for f in ("cmrc2018_dev.json", "cmrc2018_trial.json")
                 for art in json.load(lines(c / "cmrc2018" / f))["data"] for p in art["paragraphs"]),
        "chid": (t.replace("#idiom#", "") for t in jsonl(c / "fewclue" / "chid_unlabeled.json", "content")),
        "eprstmt": jsonl(c / "fewclue" / "eprstmt_unlabeled.json", "sentence"),
        "iflytek": jsonl(c / "fewclue" / "iflytek_test_public.json", "sentence"),
        "waimai": column(csv.DictReader(lines(c / "sophonplus_reviews" / "waimai_10k.csv")), "review"),
        "hotel": column(csv.DictReader(lines(c / "sophonplus_reviews" / "ChnSentiCorp_htl_all.csv")), "review"),
        "shopping": column(csv.DictReader(io.TextIOWrapper(zipped.open(shopping_csv), encoding="utf-8")), "review"),
    }
    return {name: write_jsonl(out / f"{name}.jsonl", texts) for name, texts in sources.items()}


def split_valid(work: Path) -> dict[str, dict[str, int]]:
    """STS valid rows -> pair files (i % 5 != 0) and a held-out dev folder (i % 5 == 0) in senteval layout."""
    counts = {}
    (work / "pairs").mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        src = STS / task / f"{task}.valid.data"
        if not src.is_file():
            continue
        rows = [line for line in src.read_text(encoding="utf-8").splitlines() if len(line.split("\t")) >= 3]
        dev_dir = work / "dev" / task
        dev_dir.mkdir(parents=True, exist_ok=True)
        train = [r for i, r in enumerate(rows) if i % 5]
        dev = [r for i, r in enumerate(rows) if i % 5 == 0]
        (work / "pairs" / f"{task}.tsv").write_text("\n".join(train) + "\n", encoding="utf-8")
        (dev_dir / f"{task}.valid.data").write_text("\n".join(dev) + "\n", encoding="utf-8")
        counts[task] = {"train_rows": len(train), "dev_rows": len(dev)}
    return counts


def run(cmd: list[str], log: Path) -> float:
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n  see {log}")
    return time.time() - t0


def evaluate(export: Path, data: Path, split: str, max_examples: int, out: Path, generate: int) -> dict:
    t0 = time.time()
    proc = subprocess.run([PY, "-m", "pretrain.evaluate", "--task", "sts", "--model", str(export), "--data", str(data),
                           "-o", "baseline=true", "-o", f"split={split}", "-o", f"max_examples={max_examples}",
                           "-o", f"generate={generate}", "-o", "bootstrap=1000"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate failed: {proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    result["seconds"] = round(time.time() - t0, 1)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(REPO / "runs" / "bench-sts"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=42, help="train.seed (initialization, data order, noise)")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON summary goes")
    parser.add_argument("--max-examples", type=int, default=0, help="first N test rows per set (0 = whole files)")
    parser.add_argument("--no-test", action="store_true", help="dev (held-out valid rows) only")
    args = parser.parse_args()
    if not STS.is_dir():
        raise SystemExit(f"{STS}: STS data not found (set ZH_SHARED_DATA)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.time()
    corpus = build_corpus(work / "corpus")
    pairs = split_valid(work)
    timings["data_files_s"] = round(time.time() - t0, 1)
    overrides = [f"data.corpus={work / 'corpus'}/*.jsonl", f"data.clean_dir={work / 'clean'}",
                 f"tokenizer.dir={work / 'tok'}", f"objective.pair_file={work / 'pairs'}/*.tsv", *RECIPE]
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)   # a fresh run, not a resume of the last one
    launch = [PY, "-m", "pretrain.launch", "--model", "roformer-sim", "--size", "tiny", "--workers", "2"]
    timings["prepare_s"] = round(run([*launch, "--prepare-only", *overrides], work / "prepare.log"), 1)
    timings["train_s"] = round(run([*launch, "--run", str(run_dir), "--steps", str(args.steps), *overrides,
                                    f"train.warmup_steps={max(1, args.steps // 10)}", f"train.seed={args.seed}",
                                    f"train.eval_every={args.steps}", f"train.save_every={args.steps}"],
                                   work / "train.log"), 1)
    export = run_dir / "export"
    results = {"dev": evaluate(export, work / "dev", "valid", 0, work / "eval_dev.json", 0)}
    if not args.no_test:
        results["test"] = evaluate(export, STS, "test", args.max_examples, work / "eval_test.json", 3)
    train_log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in train_log if r.get("split") != "valid"][-1]
    summary = {
        "steps": args.steps, "seed": args.seed, "recipe": RECIPE, "corpus_documents": corpus, "pair_rows": pairs,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "loadavg": open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None,
        "timings": {**timings, **{f"eval_{k}_s": v["seconds"] for k, v in results.items()}},
        "last_train": {k: last[k] for k in ("seq2seq_loss", "contrastive_loss", "contrastive_acc") if k in last},
        "pooling": results["dev"]["pooling"],
        "spearman": {k: {"pretrained": v["spearman"], "random": v["baseline"]["spearman"],
                         "bootstrap": v["baseline"]["bootstrap"], "examples": v["examples"]} for k, v in results.items()},
        "generated": results.get("test", {}).get("generated", []),
    }
    results_path = Path(args.results)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False))

    names = {"dev": "held-out STS valid rows (1 in 5; the tuning set)", "test": "STS test files"}
    for split, sp in summary["spearman"].items():
        print(f"\n### RoFormer-Sim tiny ({args.steps} CPU steps) vs random init, {names[split]}: "
              f"Spearman of cosine, {summary['pooling']} pooling for both\n")
        print("| set | rows | pretrained | random init | difference [95% paired bootstrap] |")
        print("|---|---|---|---|---|")
        for task, p in sp["pretrained"].items():
            b = sp["bootstrap"][task]
            print(f"| {task} | {sp['examples'][task]} | {p:.4f} | {sp['random'][task]:.4f} | "
                  f"{b['delta']:+.4f} [{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}] |")
        wins = sum(p > sp["random"][t] for t, p in sp["pretrained"].items())
        print(f"\nPretrained above random on {wins}/{len(sp['pretrained'])} sets.")
    print(f"\nTimings (s): {json.dumps(summary['timings'])}; load average {summary['loadavg']}; "
          f"last train window {json.dumps(summary['last_train'])}.")
    for g in summary["generated"]:
        print(f"- {g['input']} -> {' / '.join(g['outputs'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
