"""Adafactor's step: ours (``pretrain.adafactor``) against Hugging Face's, on a T5 preset's real gradients.

The T5 presets (``small``, ``base``) train with Adafactor, whose step was 12-15 % of a
T5-small step on this CPU in amp-bf16 and 19-21 % in bf16. This bench builds the preset's model (``--size``, default small) on
the sample corpus (data stages in a temporary folder), runs forward and backward in amp-bf16 on
real packed batches, and gives the same gradients to three optimizers over identical weights:

* ``hf``: ``transformers.optimization.Adafactor`` as the trainer built it before (the peer);
* ``ours``: ``pretrain.adafactor.Adafactor``, which must stay bit for bit equal to ``hf``;
* ``torch-foreach``: ``torch.optim.Adafactor(foreach=True)``, for reference only: a different
  update rule (relative step size, the parameter's scale), so its weights drift apart.

The order of the three rotates every step; the first ``--warmup`` steps are not timed. Freed
memory is kept in the process as the trainer keeps it (``train.cpu_heap_reuse``).

    .venv/bin/python bench/optimizer_bench.py [--size small] [--steps 14] [--batch 8]

Writes bench/results/optimizer.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "results" / "optimizer.json"


def main(argv=None) -> int:
    ap = arguments(__doc__, steps=14)
    args = ap.parse_args(argv)

    import torch
    from transformers.optimization import Adafactor as HFAdafactor

    from pretrain.adafactor import Adafactor
    from pretrain.engine import optimizer_groups, reuse_freed_memory

    torch.set_flush_denormal(True)
    reuse = reuse_freed_memory()
    with preset("t5-pegasus", args.size, args.batch, args.steps) as (cfg, obj, model, batches):
        copies = {name: copy.deepcopy(model) for name in ("hf", "ours", "torch-foreach")}
        groups = {name: optimizer_groups(cfg, m) for name, m in copies.items()}     # the trainer's groups
        opts = {"hf": HFAdafactor(groups["hf"], lr=cfg.train.lr, scale_parameter=False, relative_step=False,
                                  warmup_init=False),
                "ours": Adafactor(groups["ours"], lr=cfg.train.lr),
                "torch-foreach": torch.optim.Adafactor(groups["torch-foreach"], lr=cfg.train.lr, foreach=True)}
        names = list(opts)
        seconds = dict.fromkeys(names, 0.0)
        fwd_bwd = 0.0
        identical = True
        for step, batch in enumerate(batches):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, _ = obj.loss(copies["hf"], batch)
            loss.backward()
            elapsed = time.perf_counter() - t
            grads = [p.grad for p in copies["hf"].parameters()]
            for name in names[1:]:
                for p, g in zip(copies[name].parameters(), grads):
                    p.grad = g.clone()
            step_each(opts, names[step % 3:] + names[:step % 3], seconds, step >= args.warmup)
            if step >= args.warmup:
                fwd_bwd += elapsed
            identical &= all(torch.equal(p, q) for p, q in zip(copies["hf"].parameters(), copies["ours"].parameters()))
            print(f"step {step}: loss {loss.item():.4f}, ours == hf: {identical}", flush=True)

    timed = args.steps - args.warmup
    ms = {n: 1e3 * s / timed for n, s in seconds.items()}
    res = {"size": args.size, "batch": args.batch, "steps": args.steps, "timed_steps": timed, "heap_reuse": reuse,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "fwd_bwd_ms": 1e3 * fwd_bwd / timed,
           "optimizer_ms": ms, "ours_bit_identical_to_hf": identical, "load_avg": os.getloadavg()}
    caption = (f"T5 {args.size} preset ({res['params_m']:.1f} M parameters), batch {args.batch}, amp-bf16 forward + "
               f"backward {res['fwd_bwd_ms']:.0f} ms; {timed} timed steps; load {res['load_avg'][0]:.1f}")
    report(res, ms, names, "hf", identical, Path(args.out or OUT), caption, "optimizer")
    return 0 if identical else 1


def step_each(opts: dict, order: list[str], seconds: dict, timed: bool, before=lambda name: None) -> None:
    """Step each optimizer in ``order`` (after ``before(name)``, timed with it), adding to ``seconds``."""
    for name in order:
        t = time.perf_counter()
        before(name)
        opts[name].step()
        if timed:
            seconds[name] += time.perf_counter() - t
        opts[name].zero_grad(set_to_none=True)


def arguments(doc: str, steps: int) -> argparse.ArgumentParser:
    """The options these optimizer benches share."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=None)
    return ap


@contextlib.contextmanager
def preset(model_name: str, size: str, batch: int, steps: int):
    """(cfg, objective, model, batches): a preset's freshly built model in train mode and ``steps``
    packed sample-corpus batches, its data stages built in a temporary folder."""
    import torch

    from pretrain.config import config_path, load_config
    from pretrain.data import TrainData
    from pretrain.stages import resolve

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        overrides = [f"data.clean_dir={work / 'clean'}", f"tokenizer.dir={work / 'tok'}",
                     f"data.pairs_dir={work / 'pairs'}", f"train.micro_batch_size={batch}"]
        print("preparing the sample corpus's data stages ...", flush=True)
        subprocess.run([sys.executable, "-m", "pretrain.launch", "--model", model_name, "--size", size,
                        "--prepare-only", *overrides], cwd=REPO, check=True, capture_output=True)
        cfg = resolve(load_config(config_path(model_name), overrides, size=size))
        obj = cfg.objective_class(cfg)
        torch.manual_seed(cfg.train.seed)
        model = obj.build_model()
        model.train()
        yield cfg, obj, model, [b for b, _ in itertools.islice(iter(TrainData(cfg, obj, 0, 1)), steps)]


def report(res: dict, ms: dict, names: list[str], peer: str, identical: bool, out: Path, caption: str,
           what: str) -> None:
    """Write ``res`` to ``out``; print each contender's ms per step against ``peer`` as a markdown table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(f"\n{caption}\n")
    print(f"| {what} | ms per step | share of a step (forward + backward + optimizer) | vs {peer} |")
    print("|---|---:|---:|---:|")
    for n in names:
        share = ms[n] / (res["fwd_bwd_ms"] + ms[n])
        print(f"| {n} | {ms[n]:.1f} | {100 * share:.1f} % | {ms[peer] / ms[n]:.2f}x |")
    step_peer, step_ours = res["fwd_bwd_ms"] + ms[peer], res["fwd_bwd_ms"] + ms["ours"]
    print(f"\nours bit for bit equal to {peer} over every step: {identical}; "
          f"whole step {step_peer:.0f} -> {step_ours:.0f} ms ({step_peer / step_ours:.3f}x)")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
