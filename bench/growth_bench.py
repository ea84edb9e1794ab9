"""Progressive growth benchmark: small -> grown versus large from scratch, same training FLOPs.

Masked-LM (BERT, 15% masking) on real Chinese news (THUCNews subset in the shared data
folder), character vocabulary built from the training split. Run A trains a 2-layer
model for half its FLOP budget, grows it to 4 layers (pretrain.growth, function-
preserving) and continues; run B trains the 4-layer model from scratch with the same
total FLOPs. FLOPs = 6 x (parameters touched per token, embeddings excluded) x tokens.
Reported: validation loss against FLOPs and the FLOPs each run needs to first reach
run B's final validation loss.

    python bench/growth_bench.py [--budget-steps 400] [--seq 64] [--batch 16]

CPU scale (minutes on 2 cores); a plain PyTorch AdamW loop, since the point here is the
growth operation, not the distributed trainer (tests/test_growth.py covers growth
inside the DeepSpeed job).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pretrain.surgery import GrowthStep, grow  # noqa: E402

DATA = Path(os.environ.get("ZH_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_text(seq: int):
    path = DATA / "corpus" / "thucnews_cnews_subset" / "cnews.val.txt"
    docs = [line.split("\t", 1)[1] for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]
    random.Random(0).shuffle(docs)
    train, valid = docs[:900], docs[900:]
    counts = Counter(c for d in train for c in d)
    chars = [c for c, _ in counts.most_common(3000 - 5)]
    vocab = {c: i + 5 for i, c in enumerate(chars)}          # 0 pad, 1 unk, 2 cls, 3 sep, 4 mask

    def chunks(docs):
        ids = [vocab.get(c, 1) for d in docs for c in d]
        n = seq - 1
        return torch.tensor([[2] + ids[i:i + n] for i in range(0, len(ids) - n, n)])

    return chunks(train), chunks(valid), len(vocab) + 5


def mask_batch(x: torch.Tensor, g: torch.Generator):
    labels = x.clone()
    pick = torch.rand(x.shape, generator=g) < 0.15
    pick[:, 0] = False
    labels[~pick] = -100
    inputs = x.clone()
    inputs[pick] = 4
    return inputs, labels


def build(layers: int, vocab: int, seq: int):
    from transformers import BertConfig, BertForMaskedLM
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=128, num_hidden_layers=layers,
                                      num_attention_heads=4, intermediate_size=512, max_position_embeddings=seq,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def flops_per_token(model) -> float:
    """6 x parameters used per token, excluding embedding lookups (the tied decoder counts)."""
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n and "LayerNorm" not in n)
    dense = sum(p.numel() for p in model.parameters()) - emb
    return 6.0 * (dense + model.config.vocab_size * model.config.hidden_size)


@torch.no_grad()
def validate(model, valid: torch.Tensor, batch: int) -> float:
    model.eval()
    g = torch.Generator().manual_seed(1)
    total = 0.0
    n = 0
    for i in range(0, min(len(valid), 16 * batch), batch):
        inputs, labels = mask_batch(valid[i:i + batch], g)
        total += float(model(input_ids=inputs, labels=labels).loss)
        n += 1
    model.train()
    return total / n


def train(model, train_data, valid, steps, batch, lr, flops0, curve, g, eval_every, total_steps, step0=0):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = 20
    fpt = flops_per_token(model)
    flops = flops0
    for s in range(steps):
        global_step = step0 + s + 1
        frac = min((s + 1) / warm, 1.0) * max(0.0, 1 - global_step / total_steps)   # (re)warmup, linear decay
        for group in opt.param_groups:
            group["lr"] = lr * frac
        idx = torch.randint(len(train_data), (batch,), generator=g)
        inputs, labels = mask_batch(train_data[idx], g)
        loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        flops += fpt * inputs.numel()
        if global_step % eval_every == 0:
            curve.append({"step": global_step, "flops": flops, "valid_loss": validate(model, valid, batch)})
    return flops


def flops_to_reach(curve, target):
    return next((p["flops"] for p in curve if p["valid_loss"] <= target), None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-steps", type=int, default=400, help="steps of the large model from scratch")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=25)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    train_data, valid, vocab = load_text(args.seq)
    tokens = args.batch * args.seq

    large = build(4, vocab, args.seq)
    budget = flops_per_token(large) * tokens * args.budget_steps
    scratch = []
    train(large, train_data, valid, args.budget_steps, args.batch, args.lr, 0.0, scratch,
          torch.Generator().manual_seed(0), args.eval_every, args.budget_steps)

    small = build(2, vocab, args.seq)
    half = int(budget / 2 / (flops_per_token(small) * tokens))
    rest = int(budget / 2 / (flops_per_token(large) * tokens))
    grown_curve = []
    flops = train(small, train_data, valid, half, args.batch, args.lr, 0.0, grown_curve,
                  torch.Generator().manual_seed(0), args.eval_every, half + rest)
    before = validate(small, valid, args.batch)
    big = grow(small, GrowthStep(layers=4)).train()
    check = validate(big, valid, args.batch)
    grown_curve.append({"step": half, "flops": flops, "valid_loss": check, "grown": True})
    train(big, train_data, valid, rest, args.batch, args.lr, flops, grown_curve,
          torch.Generator().manual_seed(1), args.eval_every, half + rest, step0=half)

    target = scratch[-1]["valid_loss"]
    f_scratch, f_grown = flops_to_reach(scratch, target), flops_to_reach(grown_curve, target)
    result = {
        "task": "BERT MLM, THUCNews characters, hidden 128, 2 -> 4 layers at half the FLOP budget",
        "budget_flops": budget, "scratch": scratch, "grown": grown_curve,
        "valid_loss_before_growth": before,
        "valid_loss_right_after_growth": check,
        "final_valid_loss": {"scratch": target, "grown": grown_curve[-1]["valid_loss"]},
        "flops_to_reach_scratch_final": {"scratch": f_scratch, "grown": f_grown},
        "flops_saved": None if f_grown is None else 1 - f_grown / f_scratch,
        "seconds": time.time() - t0,
    }
    out = REPO / "bench" / "results" / "growth.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print("| run | FLOPs (1e12) | final valid loss | FLOPs to reach scratch's final loss (1e12) |")
    print("|---|---|---|---|")
    print(f"| 4 layers from scratch | {budget / 1e12:.2f} | {target:.3f} | {f_scratch / 1e12:.2f} |")
    reach = "not reached" if f_grown is None else f"{f_grown / 1e12:.2f}"
    print(f"| 2 layers -> grown to 4 at {flops / 1e12:.2f} | {grown_curve[-1]['flops'] / 1e12:.2f} | "
          f"{grown_curve[-1]['valid_loss']:.3f} | {reach} |")
    saved = "n/a" if result["flops_saved"] is None else f"{100 * result['flops_saved']:.0f}%"
    print(f"\nFLOPs saved to reach the same validation loss: {saved}; valid loss just after growth "
          f"{check:.4f} (function-preserving); {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
