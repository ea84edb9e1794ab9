"""Progressive growth study: grown models against the target model from scratch, same training FLOPs.

Task: BERT masked LM (15 % masking, logits at the masked positions only, as the mlm-proposal
objective trains) on real Chinese text from the shared data folder (THUCNews articles,
CHID passages, C3 documents, CMRC2018 paragraphs), character vocabulary of the training
split. Target model: hidden 128, 4 layers, 4 heads, FFN 512 (``--hidden``/``--layers``).
Every run gets the FLOP budget of ``--budget-steps`` steps of the target model (500); the
learning rate is a function of the FLOPs spent (warm-up, then linear decay to zero at the
budget), so runs of different shapes follow the same schedule. After each growth the
optimizer starts afresh with a short warm-up.

Variants (each an ingredient added to the one before, except ``depth``, the old recipe):

  scratch      the target model from scratch (the baseline)
  small        half width, half depth from scratch for the whole budget (a control: how much of a
               grown run's saving a smaller model would give alone at this scale)
  depth        target width, half depth for half the budget, then 2 -> 4 layers (the old recipe)
  width+depth  half width and half depth for a third of the budget, then both at once
  stages       half width, half depth -> half width, full depth -> target (two growths)
  stages+aki   the same with bert2BERT's AKI for the width growth (new units from the next block)
  slope        stages+aki, each growth when the training loss flattens (``pretrain.growth.slope_due``)

FLOPs = 6 x (matmul parameters a token passes: layers, and the LM head at masked tokens) x
tokens + attention scores (12 x sequence x hidden per layer and token); embedding lookups are
free. Reported per seed: the FLOPs at which a run's validation loss first reaches the
scratch run's final validation loss (linear interpolation between evaluations), and
FLOPs saved = 1 - that / the budget. Results go to bench/results/growth.json, run by run,
so an interrupted study resumes where it stopped.

    python bench/growth_bench.py [--seeds 0,1,2] [--variants scratch,stages] [--budget-steps 500]

CPU scale; a plain PyTorch loop (tests/test_growth.py covers growth inside the DeepSpeed job).
FLOPs-to-loss figures do not depend on machine load; run it niced.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pretrain.growth import slope_due  # noqa: E402
from pretrain.surgery import GrowthStep, grow  # noqa: E402

DATA = Path(os.environ.get("ZH_SHARED_DATA", REPO.parent / "shared" / "data"))
PAD, UNK, CLS, SEP, MASK = range(5)
OUT = REPO / "bench" / "results" / "growth.json"


# ---------------------------------------------------------------- data
def documents() -> list[str]:
    """Long real documents from the shared data folder (each source read as its format says)."""
    c = DATA / "corpus"
    docs = [line.split("\t", 1)[1] for line in (c / "thucnews_cnews_subset" / "cnews.val.txt")
            .read_text(encoding="utf-8").splitlines() if "\t" in line]
    for line in (c / "fewclue" / "chid_unlabeled.json").read_text(encoding="utf-8").splitlines():
        docs.append(json.loads(line)["content"].replace("#idiom#", ""))
    for name in ("c3-m-train.json", "c3-m-dev.json"):
        docs += ["".join(item[0]) for item in json.loads((c / "c3" / name).read_text(encoding="utf-8"))]
    squad = json.loads((c / "cmrc2018" / "cmrc2018_dev.json").read_text(encoding="utf-8"))
    docs += [p["context"] for art in squad["data"] for p in art["paragraphs"]]
    return [d for d in docs if len(d) >= 32]


def load_text(seq: int, vocab_size: int = 3000):
    """(train rows, valid rows, vocabulary size): documents as [CLS] + seq-1 characters per row."""
    docs = documents()
    random.Random(0).shuffle(docs)
    n_valid = len(docs) // 50
    train, valid = docs[n_valid:], docs[:n_valid]
    counts = Counter(ch for d in train for ch in d)
    vocab = {ch: i + 5 for i, (ch, _) in enumerate(counts.most_common(vocab_size - 5))}

    def rows(docs):
        out = []
        for d in docs:
            ids = [vocab.get(ch, UNK) for ch in d]
            out += [[CLS] + ids[i:i + seq - 1] for i in range(0, len(ids) - seq + 2, seq - 1)]
        return torch.tensor(out)

    return rows(train), rows(valid), vocab_size


def mask_batch(x: torch.Tensor, g: torch.Generator, vocab: int):
    """BERT corruption (80 % [MASK], 10 % random, 10 % kept) of 15 % of the non-[CLS] positions."""
    pick = torch.rand(x.shape, generator=g) < 0.15
    pick[:, 0] = False
    r = torch.rand(x.shape, generator=g)
    inputs = torch.where(pick & (r < 0.8), torch.full_like(x, MASK), x)
    rand = torch.randint(5, vocab, x.shape, generator=g)
    inputs = torch.where(pick & (r >= 0.8) & (r < 0.9), rand, inputs)
    return inputs, pick


# ---------------------------------------------------------------- model and FLOPs
def build(hidden: int, layers: int, vocab: int, seq: int, seed: int):
    from transformers import BertConfig, BertForMaskedLM
    torch.manual_seed(seed)
    return BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=max(1, hidden // 32), intermediate_size=4 * hidden,
                                      max_position_embeddings=seq, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0))


def step_flops(model, tokens: int, masked: int, seq: int) -> float:
    """Training FLOPs of one batch: layers at every token, the LM head at the masked ones, attention scores."""
    c = model.config
    layers = sum(p.numel() for n, p in model.named_parameters() if ".encoder.layer." in n)
    head = c.hidden_size * c.hidden_size + c.hidden_size * c.vocab_size
    attention = 12 * seq * c.hidden_size * c.num_hidden_layers
    return 6.0 * (layers * tokens + head * masked) + attention * tokens


def masked_loss(model, inputs, pick, targets):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.bert(input_ids=inputs).last_hidden_state
        logits = model.cls(hidden[pick])
    return F.cross_entropy(logits.float(), targets[pick])


@torch.no_grad()
def validate(model, valid_batches) -> float:
    model.eval()
    losses = [float(masked_loss(model, inputs, pick, x)) for x, inputs, pick in valid_batches]
    model.train()
    return sum(losses) / len(losses)


# ---------------------------------------------------------------- runs
@dataclass
class Stage:
    hidden: int
    layers: int
    until: float = 1.0            # budget fraction at which this stage ends (grows into the next)
    slope: GrowthStep | None = None   # when: slope -- ends when the training loss flattens (until = latest)
    method: str = "fpi"           # how the model grows INTO this stage


@dataclass
class Run:
    curve: list = field(default_factory=list)
    growths: list = field(default_factory=list)
    train: list = field(default_factory=list)     # (step, flops, training loss) every 10 steps


def variants(h: int, n: int, window: int, threshold: float) -> dict[str, list[Stage]]:
    slope = GrowthStep(when="slope", window=window, threshold=threshold)
    return {
        "scratch": [Stage(h, n)],
        "small": [Stage(h // 2, n // 2)],      # control: the first stage's model alone, the whole budget
        "depth": [Stage(h, n // 2, 0.5), Stage(h, n)],
        "width+depth": [Stage(h // 2, n // 2, 1 / 3), Stage(h, n)],
        "stages": [Stage(h // 2, n // 2, 0.2), Stage(h // 2, n, 0.4), Stage(h, n)],
        "stages+aki": [Stage(h // 2, n // 2, 0.2), Stage(h // 2, n, 0.4), Stage(h, n, method="aki")],
        "slope": [Stage(h // 2, n // 2, 0.3, slope), Stage(h // 2, n, 0.6, slope), Stage(h, n, method="aki")],
    }


def train_run(stages: list[Stage], data, args, seed: int) -> Run:
    train, valid_batches, vocab = data
    g = torch.Generator().manual_seed(seed)
    budget = step_flops(build(args.hidden, args.layers, vocab, args.seq, seed), args.batch * args.seq,
                        round(0.15 * args.batch * (args.seq - 1)), args.seq) * args.budget_steps
    run, flops, step = Run(), 0.0, 0
    model = build(stages[0].hidden, stages[0].layers, vocab, args.seq, seed)
    for k, stage in enumerate(stages):
        if k:
            step_ = GrowthStep(hidden=stage.hidden if stage.hidden != model.config.hidden_size else 0,
                               layers=stage.layers if stage.layers != model.config.num_hidden_layers else 0,
                               ffn=4 * stage.hidden if stage.hidden != model.config.hidden_size else 0,
                               method=stage.method)
            before = run.curve[-1]["valid_loss"]
            model = grow(model, step_, seed=seed + k).train()
            after = validate(model, valid_batches)
            run.growths.append({"step": step, "flops": flops, "to": [stage.hidden, stage.layers],
                                "valid_before": before, "valid_after": after})
            run.curve.append({"step": step, "flops": flops, "valid_loss": after, "grown": True})
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, fused=True)
        end, history, start = stage.until * budget, [], step
        while flops < end - 1e-6 * budget:
            frac = min((step - start + 1) / args.warmup, 1.0) * max(0.0, 1 - flops / budget)
            for group in opt.param_groups:
                group["lr"] = args.lr * frac
            x = train[torch.randint(len(train), (args.batch,), generator=g)]
            inputs, pick = mask_batch(x, g, vocab)
            loss = masked_loss(model, inputs, pick, x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            flops += step_flops(model, x.numel(), int(pick.sum()), args.seq)
            step += 1
            history.append((step, loss.item()))
            if step % 10 == 0:
                run.train.append((step, flops, loss.item()))
            if step % args.eval_every == 0:
                run.curve.append({"step": step, "flops": flops, "valid_loss": validate(model, valid_batches)})
            if stage.slope is not None and slope_due(stage.slope, history, step, start):
                break
        if not run.curve or run.curve[-1]["step"] != step:
            run.curve.append({"step": step, "flops": flops, "valid_loss": validate(model, valid_batches)})
    return run


def flops_to_reach(curve: list[dict], target: float) -> float | None:
    """The FLOPs at which the validation loss first reaches ``target`` (linear between evaluations)."""
    for a, b in zip(curve, curve[1:]):
        if b["valid_loss"] <= target:
            if a["valid_loss"] <= target or b["flops"] == a["flops"]:
                return b["flops"] if a["valid_loss"] > target else a["flops"]
            t = (a["valid_loss"] - target) / (a["valid_loss"] - b["valid_loss"])
            return a["flops"] + t * (b["flops"] - a["flops"])
    return curve[0]["flops"] if curve and curve[0]["valid_loss"] <= target else None


def summary(results: dict, names: list[str], seeds: list[int]) -> list[str]:
    lines = ["| run | FLOPs saved to scratch's final valid loss (mean; per seed) | final valid loss (mean) | "
             "growth steps (seed 0) |", "|---|---|---|---|"]
    for name in names:
        saved, final, steps = [], [], "-"
        for seed in seeds:
            r, s = results.get(f"{name}/{seed}"), results.get(f"scratch/{seed}")
            if r is None or s is None:
                continue
            target, budget = s["curve"][-1]["valid_loss"], s["curve"][-1]["flops"]
            reach = flops_to_reach(r["curve"], target)
            saved.append(None if reach is None else 1 - reach / budget)
            final.append(r["curve"][-1]["valid_loss"])
            if seed == seeds[0] and r["growths"]:
                steps = ", ".join(f"{g['step']} (->{g['to'][0]}x{g['to'][1]})" for g in r["growths"])
        if not final:
            continue
        shown = [s for s in saved if s is not None]
        mean = f"**{100 * sum(shown) / len(shown):.0f} %**" if len(shown) == len(saved) else "not reached"
        per = ", ".join("n/r" if s is None else f"{100 * s:.0f} %" for s in saved)
        lines.append(f"| {name} | {mean} ({per}) | {sum(final) / len(final):.3f} | {steps} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-steps", type=int, default=500, help="steps of the target model from scratch")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--valid-batches", type=int, default=6)
    ap.add_argument("--slope-window", type=int, default=60)
    ap.add_argument("--slope-threshold", type=float, default=0.01)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--fresh", action="store_true", help="ignore runs already in --out")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))  # taskset-aware
    specs = variants(args.hidden, args.layers, args.slope_window, args.slope_threshold)
    names = [n for n in (args.variants.split(",") if args.variants else specs) if n]
    names = ["scratch"] + [n for n in names if n != "scratch"]
    seeds = [int(s) for s in args.seeds.split(",")]
    train, valid, vocab = load_text(args.seq)
    g = torch.Generator().manual_seed(12345)
    valid_batches = []
    for i in range(args.valid_batches):
        x = valid[i * args.batch:(i + 1) * args.batch]
        valid_batches.append((x, *mask_batch(x, g, vocab)))
    out = Path(args.out)
    saved = {} if args.fresh or not out.is_file() else json.loads(out.read_text(encoding="utf-8"))
    setup = {k: getattr(args, k) for k in ("budget_steps", "hidden", "layers", "seq", "batch", "lr", "warmup",
                                           "eval_every", "valid_batches", "slope_window", "slope_threshold")}
    if saved.get("setup") != setup:
        saved = {"setup": setup, "runs": {}}
    saved["data"] = {"train_rows": len(train), "valid_rows": len(valid), "vocab": vocab}
    for seed in seeds:
        for name in names:
            key = f"{name}/{seed}"
            if key in saved["runs"]:
                continue
            t0 = time.time()
            run = train_run(specs[name], (train, valid_batches, vocab), args, seed)
            saved["runs"][key] = {"curve": run.curve, "growths": run.growths, "train": run.train,
                                  "seconds": time.time() - t0}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(saved, separators=(",", ":")) + "\n", encoding="utf-8")   # compact: curves of 20+ runs
            print(f"{key}: final valid loss {run.curve[-1]['valid_loss']:.4f}, {time.time() - t0:.0f} s", flush=True)
    lines = summary(saved["runs"], names, seeds)
    print(f"\nBERT MLM, target hidden {args.hidden} x {args.layers} layers, sequence {args.seq}, batch {args.batch}, "
          f"budget {args.budget_steps} target-model steps, seeds {args.seeds}\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
