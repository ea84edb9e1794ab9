"""Continued pretraining from a foreign checkpoint (issue #19): three starts on the same real text.

    .venv/bin/python bench/init_bench.py [--family mlm|t5|both] [--steps 600] [--base-steps 400]

Starts, all trained by the project's trainer (``pretrain.launch``) with the project's
word+character vocabulary built from the corpus:

  (a) transplant: the checkpoint's weights, new tokens as the mean of their old pieces (INIT=);
  (b) the checkpoint's weights with the new rows drawn at random (TencentPretrain's adapter;
      ``init.new_rows=random``);
  (c) from scratch (same architecture).

The checkpoints are stand-ins built by bench/foreign_checkpoints.py with plain transformers code
(no weights can be downloaded here): a BERT-Chinese-shaped MLM on the real BERT-Chinese
vocabulary (WoBERT recipe, objective bert-wwm without whole-word masking) and an mT5-shaped
model with a SentencePiece tokenizer (T5 PEGASUS recipe). Reported per start: the validation
loss at step 0 (before any update) and at every evaluation, and the steps each start needs to
reach (c)'s final validation loss. Writes bench/results/init.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import foreign_checkpoints  # noqa: E402

SHARED = foreign_checkpoints.SHARED
FAMILIES = {
    "mlm": {"model": "bert-wwm", "extra": ["objective.whole_word=false"],
            "scratch": ["arch.d_model=128", "arch.num_layers=2", "arch.num_heads=2", "arch.d_ff=512"]},
    "t5": {"model": "t5-pegasus", "extra": [],
           "scratch": ["arch.d_model=128", "arch.d_ff=256", "arch.num_layers=2", "arch.num_decoder_layers=2",
                       "arch.num_heads=4", "arch.d_kv=32"]},
}


def step0_loss(model: str, overrides: list[str]) -> float:
    """Validation loss of a start before any update (the trainer's own objective and masks)."""
    from pretrain.config import config_path, load_config
    from pretrain.data import ShardStream, list_shards
    from pretrain.stages import resolve

    cfg = resolve(load_config(config_path(model), overrides))
    torch.manual_seed(cfg.train.seed)
    objective = cfg.objective_class(cfg)
    net = objective.initial_model().eval()
    stream = ShardStream(list_shards(objective.valid_dir, "valid"), shuffle=False, loop=False)
    records = [r for _, r in zip(range(cfg.train.micro_batch_size * cfg.train.eval_batches), stream)]
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(records), cfg.train.micro_batch_size):
            loss, _ = objective.loss(net, objective.collate(records[i:i + cfg.train.micro_batch_size]))
            total, n = total + float(loss), n + 1
    return total / max(n, 1)


def curve(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r.get("split") == "valid"]


def steps_to(points: list[tuple[int, float]], target: float) -> int | None:
    return next((s for s, l in points if l <= target), None)


def run_family(name: str, work: Path, steps: int, base_steps: int, corpus: str) -> dict:
    fam = FAMILIES[name]
    texts = foreign_checkpoints.real_texts(3000, articles=slice(500, None))   # not the pretraining articles
    base = (foreign_checkpoints.bert_chinese if name == "mlm" else foreign_checkpoints.mt5)(
        work / f"base-{name}", steps=base_steps, texts=texts)
    common = [f"data.corpus={corpus}", f"data.clean_dir={work / 'clean'}", f"train.steps={steps}",
              "train.eval_every=50", "train.save_every=100000", "train.log_every=50", "train.eval_batches=8",
              "train.eval_generate=0", *fam["extra"]]
    starts = {"a_transplant": [f"init.path={base}"], "b_random_rows": [f"init.path={base}", "init.new_rows=random"],
              "c_scratch": fam["scratch"]}
    out = {"base": str(base), "steps": steps, "base_steps": base_steps, "starts": {}}
    for start, extra in starts.items():
        run = work / f"{name}-{start}"
        overrides = [*common, *extra, f"run_dir={run}", f"tokenizer.dir={work / ('tok-' + name)}"]
        proc = subprocess.run([sys.executable, "-m", "pretrain.launch", "--model", fam["model"], *overrides],
                              cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        points = curve(run)
        out["starts"][start] = {"step0_valid_loss": step0_loss(fam["model"], overrides), "valid": points}
        print(f"{name} {start}: step 0 {out['starts'][start]['step0_valid_loss']:.4f}, final {points[-1][1]:.4f}",
              flush=True)
    target = out["starts"]["c_scratch"]["valid"][-1][1]
    for start, rec in out["starts"].items():
        rec["steps_to_scratch_final"] = steps_to(rec["valid"], target)
    out["scratch_final_loss"] = target
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["mlm", "t5", "both"], default="both")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--base-steps", type=int, default=400)
    args = ap.parse_args()
    news = SHARED / "corpus" / "thucnews_cnews_subset" / "cnews.val.txt"
    if not news.is_file():
        raise SystemExit(f"{news}: the real corpus is needed (ZH_SHARED_DATA)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="init-bench-") as tmp:
        # pretraining text: the first 500 articles; the stand-in bases learned from the other 500
        corpus = Path(tmp) / "cnews-first500.txt"
        corpus.write_text("\n".join(news.read_text(encoding="utf-8").splitlines()[:500]) + "\n", encoding="utf-8")
        for name in (["mlm", "t5"] if args.family == "both" else [args.family]):
            results[name] = run_family(name, Path(tmp), args.steps, args.base_steps, str(corpus))
    path = REPO / "bench" / "results" / "init.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**old, **results}, indent=1) + "\n")
    for name, res in results.items():
        print(f"\n{name}: scratch final valid loss {res['scratch_final_loss']:.4f} at step {res['steps']}")
        print("| start | valid loss at step 0 | final | steps to scratch's final loss |\n|---|---|---|---|")
        for start, rec in res["starts"].items():
            print(f"| {start} | {rec['step0_valid_loss']:.4f} | {rec['valid'][-1][1]:.4f} | "
                  f"{rec['steps_to_scratch_final']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
