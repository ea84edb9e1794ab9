"""Training-runtime benchmark: our DeepSpeed runtime against a plain transformers + AdamW loop.

Same model (T5 v1.1 / mT5 architecture), same initial weights (seeded), same batches in
the same order, measured in the same run:

  plain     transformers MT5ForConditionalGeneration + torch.optim.AdamW, a bare loop
  zero0/2/3 `python -m pretrain.train` (the DeepSpeed engine) at ZeRO stage 0, 2 and 3

Reports tokens/s (source + target tokens), the speed-up over the plain loop, ZeRO-2/3
overhead against ZeRO-0, and MFU against this machine's measured fp32 matmul peak
(FLOPs = 6 x (encoder matmul parameters x source tokens + decoder and LM-head parameters x
target tokens), counted on the plain model before DeepSpeed wraps it).

  .venv/bin/python bench/train_bench.py [--steps 200] [--d-model 256] [--layers 4]
Writes bench/results/train.json and prints a markdown table.
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
sys.path.insert(0, str(REPO))


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 matmul throughput of this machine with all threads (FLOP/s)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def prepare(work: Path) -> list[str]:
    overrides = [f"data.clean_dir={work / 'clean'}", f"tokenizer.dir={work / 'tok'}", f"data.pairs_dir={work / 'pairs'}"]
    subprocess.run([sys.executable, "-m", "pretrain.launch", "--model", "t5-pegasus", "--prepare-only", *overrides],
                   cwd=REPO, check=True, capture_output=True)
    return overrides


def model_overrides(args) -> list[str]:
    a = args
    return [f"arch.d_model={a.d_model}", f"arch.d_ff={a.d_model * 2}", f"arch.num_layers={a.layers}",
            f"arch.num_decoder_layers={a.layers}", f"arch.num_heads={a.d_model // 64}", "arch.d_kv=64",
            f"train.steps={a.steps}", f"train.micro_batch_size={a.batch}", "train.max_source_len=192",
            "train.max_target_len=64", f"train.log_every={a.log_every}", "train.eval_every=100000",
            "train.save_every=100000", "train.eval_generate=0", "train.eval_batches=1", "train.seed=1"]


def plain_loop(overrides: list[str], steps: int, log_every: int) -> dict:
    """A bare transformers + AdamW loop over the same batches (the baseline users would write)."""
    import torch

    from pretrain.config import config_path, load_config
    from pretrain.data import ShardStream, batches, list_shards
    from pretrain.objectives.t5_pegasus import T5PegasusObjective

    cfg = load_config(config_path("t5-pegasus"), overrides)
    torch.manual_seed(cfg.train.seed)
    obj = T5PegasusObjective(cfg)
    model = obj.build_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    stream = ShardStream(list_shards(obj.train_dir, "train"), 0, 1, seed=cfg.train.seed)
    it = batches(stream, cfg.train.micro_batch_size)
    rates, tokens, start = [], 0, time.perf_counter()
    flops_per_token = []
    for step in range(1, steps + 1):
        batch = obj.collate(next(it))
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += obj.tokens_in(batch)
        flops_per_token.append(obj.train_flops(model, batch) / obj.tokens_in(batch))
        if step % log_every == 0:
            rates.append(tokens / (time.perf_counter() - start))
            tokens, start = 0, time.perf_counter()
    n_params = sum(p.numel() for p in model.parameters())
    return {"tokens_per_s": sum(rates[1:]) / max(1, len(rates) - 1), "params": n_params, "final_loss": loss.item(),
            "flops_per_token": sum(flops_per_token) / len(flops_per_token)}


def runtime(overrides: list[str], zero: int, work: Path) -> dict:
    run_dir = work / f"run-zero{zero}"
    cmd = [sys.executable, "-m", "pretrain.train", "--config", "configs/t5-pegasus.yaml", f"run_dir={run_dir}",
           f"train.zero_stage={zero}", *overrides]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    recs = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r.get("split") != "valid"]
    rates = [r["tokens_per_s"] for r in train[1:]]        # the first window includes warm-up
    data = [r["data_time_frac"] for r in train[1:]]
    return {"tokens_per_s": sum(rates) / len(rates), "final_loss": train[-1]["loss"],
            "data_time_frac": sum(data) / len(data)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "train.json"))
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        overrides = prepare(work) + model_overrides(args)
        peak = matmul_peak_flops()
        results = {"plain": plain_loop(overrides, args.steps, args.log_every)}
        for zero in (0, 2, 3):
            results[f"zero{zero}"] = runtime(overrides, zero, work)
    n = results["plain"]["params"]
    base = results["plain"]["tokens_per_s"]
    fpt = results["plain"]["flops_per_token"]    # same model and batches for every runtime
    for name, r in results.items():
        r["speedup_vs_plain"] = r["tokens_per_s"] / base
        r["mfu"] = fpt * r["tokens_per_s"] / peak
    for z in (2, 3):
        results[f"zero{z}"]["overhead_vs_zero0"] = results["zero0"]["tokens_per_s"] / results[f"zero{z}"]["tokens_per_s"]
    out = {"model": f"T5 v1.1 d_model={args.d_model} layers={args.layers}+{args.layers}", "params": n,
           "batch": args.batch, "steps": args.steps, "cpu_count": os.cpu_count(),
           "matmul_peak_gflops": peak / 1e9, "load_avg": os.getloadavg(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\n{out['model']}, {n / 1e6:.1f}M params, batch {args.batch}, {args.steps} steps, "
          f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, load {out['load_avg'][0]:.1f}\n")
    print("| runtime | tokens/s | vs plain loop | MFU | overhead vs ZeRO-0 | time in data + tokenization |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        over = f"{r['overhead_vs_zero0']:.2f}x" if "overhead_vs_zero0" in r else "-"
        data = f"{100 * r['data_time_frac']:.1f}%" if "data_time_frac" in r else "-"
        print(f"| {name} | {r['tokens_per_s']:.0f} | {r['speedup_vs_plain']:.2f}x | {100 * r['mfu']:.1f}% | {over} | {data} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
