"""MFU of every model's ``small`` preset on this machine (#24: target >= 40 % of the bf16 peak).

Each model runs through the real launcher (``python -m pretrain.launch --size small``: its data
stages, then the DeepSpeed engine, ZeRO-0, one process) for a few steps at the preset's own
``train.precision`` (bf16 for every small preset: bf16 weights, fp32 master weights in the
optimizer; ``--precision amp-bf16`` runs fp32 weights under bf16 autocast, as this bench did
before 2026-12-06; ``--compile`` adds ``train.compile=true``) and the trainer's own
``metrics.jsonl`` gives tokens/s, model FLOP/s and MFU per log window (the first window,
which holds start-up and compilation, is left out). The preset's dimensions, sequence lengths,
objective and sequences per optimizer step are kept (``--batch preset``, the default). A
micro-batch larger than ``--max-micro`` (32) is split into gradient-accumulation steps of at most
that many sequences, so that it fits a CPU's memory (mlm-proposal's 128 x 512 tokens in one
micro-batch was killed for memory at 23 GB resident on a 24 GiB host): the optimizer step still
covers the preset's batch, and the matmuls lose only rows. ``--batch N`` runs N sequences per step
in one micro-batch, the quick form this bench used until 2026-12-07: it charges a whole optimizer
step (T5-small's clip and Adafactor: about 15 % of a step at 8 sequences) to a quarter to a
sixteenth of the preset's tokens.

MFU is reported against two denominators:

* the peak of the run's matmul precision (bf16 for bf16 and amp-bf16), as the trainer measures it at start
  (1024^3 matmuls in the training process): the ``mfu`` that ``metrics.jsonl`` logs;
* the machine's best matmul peak over fp32 and bf16, measured here (2048^3). On a CPU without AMX, bf16 matmuls can
  be *slower* than fp32 (this host: see the printed peaks), and MFU against the bf16 peak alone
  would then flatter the run.

    .venv/bin/python bench/mfu_bench.py [--models t5-pegasus,electra,mlm-proposal,roformer-sim]
        [--steps 12] [--log-every 4] [--batch preset|N] [--max-micro 32]
        [--precision preset|bf16|amp-bf16|fp32] [--compile] [--set KEY=VALUE ...]

Writes bench/results/mfu_small.json and prints a markdown table.
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
OUT = REPO / "bench" / "results" / "mfu_small.json"
MODELS = ("t5-pegasus", "electra", "mlm-proposal", "roformer-sim")


def batch_split(model: str, batch: str, max_micro: int) -> tuple[int, int]:
    """(micro-batch, gradient-accumulation steps) for a run: the preset's sequences per optimizer
    step in micro-batches of at most ``max_micro``, or ``batch`` sequences in one micro-batch."""
    if batch != "preset":
        return int(batch), 1
    from pretrain.config import config_path, load_config
    train = load_config(config_path(model), size="small").train
    per_step = train.micro_batch_size * train.grad_accum
    micro = train.micro_batch_size
    while micro > max_micro or per_step % micro:     # the largest divisor of the step's batch that fits
        micro -= 1
    return micro, per_step // micro


def run(model: str, work: Path, args) -> dict:
    run_dir = work / f"run-{model}"
    micro, accum = batch_split(model, args.batch, args.max_micro)
    overrides = [f"data.clean_dir={work / 'clean'}", f"tokenizer.dir={work / 'tok'}", f"data.pairs_dir={work / 'pairs'}",
                 f"data.tokens_dir={work / ('tokens-' + model)}",
                 f"train.micro_batch_size={micro}", f"train.grad_accum={accum}",
                 *([f"train.precision={args.precision}"] if args.precision != "preset" else []),
                 f"train.compile={str(args.compile).lower()}", "train.zero_stage=0", "train.eval_every=1000000",
                 "train.save_every=1000000", "train.eval_generate=0", "train.warmup_steps=2", *args.set]
    cmd = [sys.executable, "-m", "pretrain.launch", "--model", model, "--size", "small", "--run", str(run_dir),
           "--steps", str(args.steps), "--log-every", str(args.log_every), *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{model}: the launcher failed:\n{proc.stderr[-3000:]}")
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r.get("split") != "valid"][1:]      # the first window: start-up, compilation
    mean = lambda k: sum(r[k] for r in train) / len(train)          # noqa: E731
    return {"micro_batch": micro, "grad_accum": accum, "tokens_per_s": mean("tokens_per_s"),
            "flops_per_s": mean("flops_per_s"), "mfu_logged": mean("mfu"), "data_time_frac": mean("data_time_frac"),
            "windows": len(train), "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--log-every", type=int, default=4)
    ap.add_argument("--batch", default="preset",
                    help="sequences per optimizer step: 'preset' (default): the small preset's own; "
                         "or N: N sequences in one micro-batch")
    ap.add_argument("--max-micro", type=int, default=32,
                    help="with --batch preset: the largest micro-batch; the rest goes to gradient accumulation")
    ap.add_argument("--precision", default="preset",
                    help="train.precision for every run; 'preset' (default): each preset's own "
                         "(bf16 for every small preset)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one more config override for every run, e.g. train.cpu_heap_reuse=false (repeatable)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    if args.batch != "preset" and not (args.batch.isdigit() and int(args.batch) > 0):
        ap.error("--batch takes 'preset' or a positive number of sequences")
    if args.steps < 2 * args.log_every:
        ap.error("--steps must cover at least two --log-every windows (the first is left out)")
    import torch

    from pretrain.train import matmul_peak_flops
    torch.set_num_threads(os.cpu_count() or 1)
    peaks = {"fp32": matmul_peak_flops("float32", 2048, 10), "bf16": matmul_peak_flops("bfloat16", 2048, 10)}
    best = max(peaks.values())
    out = {"cpu_count": os.cpu_count(), "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
           "precision": args.precision, "compile": args.compile, "batch": args.batch, "steps": args.steps,
           "max_micro": args.max_micro, "overrides": args.set,
           "load_avg_start": os.getloadavg(), "models": {}}
    lines = ["| model (small preset) | sequences per step (micro-batch x accumulation) | tokens/s | model GFLOP/s "
             "| MFU vs the run's precision peak (logged) | MFU vs the machine's best matmul peak | time in data |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="mfu-bench-") as tmp:
        for model in filter(None, args.models.split(",")):
            r = run(model, Path(tmp), args)
            r["mfu_best_peak"] = r["flops_per_s"] / best
            out["models"][model] = r
            lines.append(f"| {model} | {r['micro_batch'] * r['grad_accum']} ({r['micro_batch']} x {r['grad_accum']}) | "
                         f"{r['tokens_per_s']:,.0f} | {r['flops_per_s'] / 1e9:.1f} | "
                         f"{100 * r['mfu_logged']:.1f} % | {100 * r['mfu_best_peak']:.1f} % | "
                         f"{100 * r['data_time_frac']:.1f} % |")
            print(lines[-1], flush=True)
            out["load_avg_end"] = os.getloadavg()
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nmatmul peaks (2048^3): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; "
          f"{args.precision}{' + compile' if args.compile else ''}, batch {args.batch}, {args.steps} steps"
          f"{''.join(' ' + kv for kv in args.set)}; "
          f"load {out['load_avg_start'][0]:.1f} -> {out['load_avg_end'][0]:.1f}\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
