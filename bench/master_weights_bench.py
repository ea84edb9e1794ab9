"""bf16 weights with fp32 masters: ours (``pretrain.master_weights``) against DeepSpeed's ZeRO-0 wrapper.

At ZeRO-0 in bf16 (the T5, ELECTRA, MLM and Sim ``small`` presets' precision) DeepSpeed wraps
the optimizer in ``FP16_UnfusedOptimizer``; the trainer now builds ``MasterWeights`` instead.
This bench builds a preset's model (``--model``, default t5-pegasus; ``--size``, default small) on
the sample corpus, in bf16, runs forward and backward on real packed batches, and gives the same
bf16 gradients to both wrappers around the preset's own optimizer (T5: Adafactor,
``pretrain.adafactor``; the encoders: fused AdamW):

* ``deepspeed``: ``FP16_UnfusedOptimizer`` as ``deepspeed.initialize`` builds it for bf16 at ZeRO-0;
* ``ours``: ``MasterWeights``.

Both steps are timed with the gradient norm the trainer takes before every ZeRO-0 step
(``train.clip_and_norm``, its finite check). Neither clips here (DeepSpeed's norm pass runs
anyway), so the two must stay bit for bit equal: ours starts from DeepSpeed's state dict (the
same layout), including the zero-gradient step DeepSpeed's wrapper takes when it is built. The
order alternates each step; the first ``--warmup`` steps are not timed.

    .venv/bin/python bench/master_weights_bench.py [--model t5-pegasus] [--size small] [--steps 12] [--batch 8]

Writes bench/results/master_weights[_MODEL].json and prints a markdown table.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "results" / "master_weights.json"

# bench/ is on the path when this runs as a script
from optimizer_bench import arguments, preset, report, step_each  # noqa: E402


def main(argv=None) -> int:
    ap = arguments(__doc__, steps=12)
    ap.add_argument("--model", default="t5-pegasus")
    args = ap.parse_args(argv)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 400), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    import torch
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer

    from pretrain.engine import base_optimizer, init_distributed, optimizer_groups, reuse_freed_memory
    from pretrain.master_weights import MasterWeights, cast_parameters
    from pretrain.train import clip_and_norm

    torch.set_flush_denormal(True)
    reuse = reuse_freed_memory()
    init_distributed()
    with preset(args.model, args.size, args.batch, args.steps) as (cfg, obj, model, batches):
        models = {"deepspeed": model, "ours": copy.deepcopy(model)}
        cast_parameters(models["deepspeed"])        # what deepspeed.initialize does before wrapping
        ds = FP16_UnfusedOptimizer(base_optimizer(cfg, optimizer_groups(cfg, models["deepspeed"])),
                                   low_precision_dtype=torch.bfloat16, clip_grad=0.0, verbose=False)
        ours = MasterWeights(optimizer_groups(cfg, models["ours"]), lambda g: base_optimizer(cfg, g))
        cast_parameters(models["ours"])
        ours.load_state_dict(copy.deepcopy(ds.state_dict()))
        opts = {"deepspeed": ds, "ours": ours}
        names = list(opts)
        seconds, fwd_bwd, identical = dict.fromkeys(names, 0.0), 0.0, True
        for step, batch in enumerate(batches):
            t = time.perf_counter()
            loss, _ = obj.loss(models["deepspeed"], batch)
            loss.backward()
            elapsed = time.perf_counter() - t
            for p, q in zip(models["deepspeed"].parameters(), models["ours"].parameters()):
                q.grad = None if p.grad is None else p.grad.clone()
            step_each(opts, names if step % 2 == 0 else names[::-1], seconds, step >= args.warmup,
                      lambda name: clip_and_norm(SimpleNamespace(module=models[name], optimizer=opts[name]), 1))
            if step >= args.warmup:
                fwd_bwd += elapsed
            masters = [[m for g in opts[n].fp32_groups for m in g] for n in names]
            identical &= all(torch.equal(a, b) for a, b in zip(*masters)) and all(
                torch.equal(p, q) for p, q in zip(models["deepspeed"].parameters(), models["ours"].parameters()))
            print(f"step {step}: loss {loss.item():.4f}, ours == deepspeed: {identical}", flush=True)

    timed = args.steps - args.warmup
    ms = {n: 1e3 * s / timed for n, s in seconds.items()}
    res = {"model": args.model, "optimizer": cfg.train.optimizer, "size": args.size, "batch": args.batch,
           "steps": args.steps, "timed_steps": timed, "heap_reuse": reuse,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "fwd_bwd_ms": 1e3 * fwd_bwd / timed,
           "norm_and_step_ms": ms, "ours_bit_identical_to_deepspeed": identical, "load_avg": os.getloadavg()}
    out = Path(args.out or (OUT if args.model == "t5-pegasus" else OUT.with_name(f"master_weights_{args.model}.json")))
    caption = (f"{args.model} {args.size} preset ({res['params_m']:.1f} M parameters), bf16, batch {args.batch}, "
               f"forward + backward {res['fwd_bwd_ms']:.0f} ms; {timed} timed steps; load {res['load_avg'][0]:.1f}")
    report(res, ms, names, "deepspeed", identical, out, caption,
           f"bf16 master weights around {cfg.train.optimizer} (norm + step)")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
