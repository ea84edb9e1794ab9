"""Mask-proposal (MAP-Net) vs uniform masking on real text: estimator variance and validation loss.

1. Real text: THUCNews articles (cnews.val.txt, 1,000 news documents) go through
   the project's own stages (Beam clean -> vocabulary), as `make pretrain` does.
2. Two tiny BERT runs through the real trainer (DeepSpeed, same seed, same data
   order), ``objective.sampling=uniform`` and ``objective.sampling=proposal``;
   validation MLM loss (uniform masks, fixed seed) against steps for both.
3. Variance at an equal mask budget, on one fixed model (the proposal run's
   final encoder + its trained MAP-Net) and one fixed batch of held-out rows,
   so the only randomness is the mask: for each masking scheme, R repeated
   draws of the pooled MLM estimate and of its gradient w.r.t. all encoder
   parameters; reports Var[loss estimate], tr Cov[gradient estimate] and the
   mean estimate (the context effect: uniform k-subset vs proposal draws).

Writes bench/results/mask_variance.json and prints markdown tables.
Run: .venv/bin/python bench/mask_variance.py [--steps 300] [--repeats 48]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pretrain.data import ShardStream, batches, list_shards  # noqa: E402
from pretrain.objectives.mlm_proposal import estimate_mlm_loss, load_proposal  # noqa: E402

SHARED = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))
RESULTS = REPO / "bench" / "results" / "mask_variance.json"
PY = sys.executable


def prepare(work: Path) -> list[str]:
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    out = corpus / "cnews.jsonl"
    if not out.is_file():
        src = SHARED / "corpus" / "thucnews_cnews_subset" / "cnews.val.txt"
        with open(src, encoding="utf-8") as fh, open(out, "w", encoding="utf-8") as w:
            for i, line in enumerate(fh):
                label, _, text = line.rstrip("\n").partition("\t")
                w.write(json.dumps({"id": f"cnews-{i}", "text": text}, ensure_ascii=False) + "\n")
    overrides = [f"data.corpus={out}", f"data.clean_dir={work / 'clean'}", f"tokenizer.dir={work / 'tok'}",
                 "data.valid_fraction=0.05", "tokenizer.vocab_size=20000"]
    subprocess.run([PY, "-m", "pretrain.launch", "--model", "mlm-proposal", "--prepare-only", *overrides],
                   cwd=REPO, check=True)
    return overrides


def train_runs(work: Path, overrides: list[str], steps: int, eval_every: int) -> dict[str, list[dict]]:
    """Both runs at once (one thread each): same seed, data order and model, only objective.sampling differs."""
    procs = {}
    for mode in ("uniform", "proposal"):
        run = work / f"run-{mode}"
        if (run / "export" / "training_step.json").is_file():
            continue
        cmd = [PY, "-m", "pretrain.train", "--config", "configs/mlm-proposal.yaml", "--size", "tiny", *overrides,
               f"run_dir={run}", f"objective.sampling={mode}", f"train.steps={steps}", "train.warmup_steps=20",
               "train.micro_batch_size=8", "objective.max_rows=8", "train.eval_batches=8", "train.num_threads=1",
               f"train.eval_every={eval_every}", f"train.save_every={steps}", "train.log_every=10",
               "train.eval_generate=0", "train.lr=1e-3"]
        log = open(work / f"{mode}.log", "w")
        procs[mode] = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "TQDM_DISABLE": "1"})
    for mode, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{mode} run failed: see {work / (mode + '.log')}")
    return {mode: [json.loads(line) for line in (work / f"run-{mode}" / "metrics.jsonl").read_text().splitlines()
                   if line.strip()] for mode in ("uniform", "proposal")}


def variance(work: Path, overrides: list[str], repeats: int, rows: int) -> dict:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from pretrain.config import load_config
    from pretrain.objectives.mlm_proposal import MLMProposalObjective

    export = work / "run-proposal" / "export"
    mlm = AutoModelForMaskedLM.from_pretrained(export).eval()
    net, oc = load_proposal(export)
    net.eval()
    tok = AutoTokenizer.from_pretrained(export)
    cfg = load_config(REPO / "configs" / "mlm-proposal.yaml", [*overrides, f"objective.max_rows={rows}"])
    obj = MLMProposalObjective(cfg, tokenizer=tok)
    records = next(batches(ShardStream(list_shards(cfg.data.clean_dir, "valid"), 0, 1, shuffle=False, loop=False),
                           rows))
    batch = obj.collate(records)
    packed = {k: batch[k] for k in ("segment_ids", "position_ids")}
    with torch.no_grad():
        scores = net(mlm.get_input_embeddings()(batch["input_ids"]), batch["attention_mask"], **packed)
    params = [p for p in mlm.parameters() if p.requires_grad]
    schemes = {
        "uniform k-subset (BERT)": ("uniform", oc.uniform_mix),
        "uniform i.i.d. draws": ("proposal", 1.0),
        f"proposal, mix {oc.uniform_mix}": ("proposal", oc.uniform_mix),
        "proposal, mix 0.2": ("proposal", 0.2),
    }
    out = {}
    for name, (sampling, mix) in schemes.items():
        oc_s = type(oc)(**{**oc.__dict__, "uniform_mix": mix})
        gen = torch.Generator().manual_seed(0)
        losses, grads, distinct = [], [], []
        t0 = time.perf_counter()
        for _ in range(repeats):
            mlm.zero_grad(set_to_none=True)
            res = estimate_mlm_loss(mlm, batch["input_ids"], batch["attention_mask"], batch["unit_ids"], scores, oc_s,
                                    tok.mask_token_id, obj.random_low, sampling, gen, **packed)
            res["loss"].backward()
            losses.append(res["loss"].item())
            grads.append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]).double())
            distinct.append(res["selected"].sum().item())
        g = torch.stack(grads)
        loss_t = torch.tensor(losses, dtype=torch.float64)
        w = res["weights"][res["valid"]]
        out[name] = {"loss_mean": loss_t.mean().item(), "loss_se": (loss_t.std() / len(losses) ** 0.5).item(),
                     "loss_var": loss_t.var().item(), "grad_var_trace": g.var(dim=0).sum().item(),
                     "grad_norm_mean": g.norm(dim=1).mean().item(), "masked_tokens": sum(distinct) / len(distinct),
                     "max_weight_last": float(w.max()), "seconds": time.perf_counter() - t0}
        print(name, json.dumps(out[name]), flush=True)
    base = out["uniform k-subset (BERT)"]
    for v in out.values():
        v["loss_var_ratio"] = v["loss_var"] / base["loss_var"]
        v["grad_var_ratio"] = v["grad_var_trace"] / base["grad_var_trace"]
    return {"rows": int(batch["input_ids"].shape[0]), "seq_len": int(batch["input_ids"].shape[1]),
            "repeats": repeats, "schemes": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(REPO / "runs" / "bench-mask-variance"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=48)
    parser.add_argument("--rows", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(args.work)
    overrides = prepare(work)
    curves = train_runs(work, overrides, args.steps, args.eval_every)
    var = variance(work, overrides, args.repeats, args.rows)
    valid = {m: {r["step"]: r["loss"] for r in recs if r.get("split") == "valid"} for m, recs in curves.items()}
    last_train = {m: [r for r in recs if r.get("split") != "valid"][-1] for m, recs in curves.items()}
    result = {"corpus": "thucnews cnews.val.txt (1,000 articles)", "steps": args.steps,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
              "valid_loss": valid, "last_train": last_train, "variance": var}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1, ensure_ascii=False))

    print(f"\n### Mask proposal (MAP-Net) vs uniform masking: estimator variance at an equal budget\n")
    print(f"One fixed model (proposal run, step {args.steps}) and {var['rows']} held-out rows x {var['seq_len']} "
          f"tokens; {var['repeats']} mask draws per scheme; 15% budget.\n")
    print("| masking | masked tokens | mean loss estimate (± s.e.) | Var[loss est.] | ratio | tr Cov[grad est.] | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, v in var["schemes"].items():
        print(f"| {name} | {v['masked_tokens']:.1f} | {v['loss_mean']:.4f} ± {v['loss_se']:.4f} | {v['loss_var']:.3e} "
              f"| {v['loss_var_ratio']:.2f} | {v['grad_var_trace']:.3e} | {v['grad_var_ratio']:.2f} |")
    print("\n### Validation MLM loss (uniform 15% masks, fixed seed) against steps\n")
    steps = sorted(set(valid["uniform"]) | set(valid["proposal"]))
    print("| step | " + " | ".join(str(s) for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for m in ("uniform", "proposal"):
        print(f"| {m} | " + " | ".join(f"{valid[m].get(s, float('nan')):.3f}" for s in steps) + " |")
    t = last_train["proposal"]
    print(f"\nProposal run, last logged window: q_entropy {t.get('q_entropy', float('nan')):.3f} (1 = uniform), "
          f"max_weight {t.get('max_weight', float('nan')):.2f}, proposal_loss {t.get('proposal_loss', float('nan')):.3f}; "
          f"tokens/s uniform {last_train['uniform']['tokens_per_s']:.0f} vs proposal {t['tokens_per_s']:.0f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
