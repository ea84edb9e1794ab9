"""T5's attention in training on CPU: ours (``pretrain.dropout.sdpa_cpu_dropout``) against transformers' ``sdpa``.

The three attentions of a T5 ``small`` step, forward + backward in bf16, at the shapes of a packed
sample-corpus batch (default: 3 rows, 6 heads of 64, 474 source and 244 target tokens):

* encoder self-attention: T5's relative bias as T5 makes it (a permuted view of the bias table, heads
  innermost, shared by every layer of the stack), a boolean mask with padding keys;
* decoder self-attention: the same, with a causal mask;
* cross-attention: T5's bias of zeros (no gradient), the encoder's padding mask.

Each kind runs ``--layers`` layers sharing one bias, as a stack does. Contenders:

* ``sdpa``: ``transformers.integrations.sdpa_attention.sdpa_attention_forward``, what a Hugging Face T5
  with ``attn_implementation="sdpa"`` runs (torch's SDPA with the bias + mask as its float mask);
* ``ours``: ``sdpa_cpu_dropout`` (the trainer's CPU attention, ``train.cpu_dropout``);
* ``ours, bias as given``: the same with ``_bias_term`` bypassed, i.e. the strided bias and the zeros
  added in every layer (the forward before 2026-12-06, stop 43; its backward is today's).

Order rotates every repeat. Each contender's outputs and gradients in bf16 are compared with
``sdpa`` on the same inputs in float32.

    .venv/bin/python bench/attention_bench.py [--batch 3] [--heads 6] [--source 474] [--target 244] [--repeats 8]

Writes bench/results/attention.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "results" / "attention.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--source", type=int, default=474)
    ap.add_argument("--target", type=int, default=244)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from pretrain import dropout as D

    torch.set_flush_denormal(True)
    g = torch.Generator().manual_seed(0)
    B, H, dh, bf16 = args.batch, args.heads, args.head_dim, torch.bfloat16

    class Module(torch.nn.Module):
        training = True
        is_causal = False

    def padding(lq: int, lk: int, causal: bool) -> torch.Tensor:
        allowed = torch.ones(B, 1, lq, lk, dtype=torch.bool)
        for i in range(1, B):                    # later rows shorter: padding keys
            allowed[i, :, :, lk - lk * i // (2 * B):] = False
        if causal:
            allowed &= torch.ones(lq, lk, dtype=torch.bool).tril()
        return allowed

    kinds = {"encoder self-attention": (args.source, args.source, False, True),
             "decoder self-attention": (args.target, args.target, True, True),
             "cross-attention": (args.target, args.source, False, False)}

    def run(fn, kind: str, check: bool = False, dtype=bf16):
        lq, lk, causal, relative = kinds[kind]
        gen = torch.Generator().manual_seed(1)
        q = torch.randn(B, H, lq, dh, generator=gen, dtype=bf16).to(dtype).requires_grad_()
        k, v = (torch.randn(B, H, lk, dh, generator=gen, dtype=bf16).to(dtype).requires_grad_() for _ in range(2))
        if relative:
            table = torch.randn(lq, lk, H, generator=gen, dtype=bf16).to(dtype).requires_grad_()
            bias = table.permute(2, 0, 1).unsqueeze(0)        # as T5Attention.compute_bias returns it
        else:
            table, bias = None, torch.zeros(1, H, lq, lk, dtype=dtype)
        mask = padding(lq, lk, causal)
        grad = torch.randn(B, lq, H, dh, generator=gen, dtype=bf16).to(dtype)
        t = time.perf_counter()
        outs = [fn(Module(), q, k, v, mask, dropout=0.0, scaling=1.0, position_bias=bias)[0]
                for _ in range(args.layers)]
        torch.autograd.backward(outs, [grad] * args.layers)
        seconds = time.perf_counter() - t
        if check:
            named = {"output": outs[0], "dq": q.grad, "dk": k.grad, "dv": v.grad, "dbias": table.grad if relative else None}
            return {name: x.detach().float() for name, x in named.items() if x is not None}
        return seconds

    def bias_as_given(*a, **kw):
        saved = D._bias_term
        D._bias_term = lambda b: b
        try:
            return D.sdpa_cpu_dropout(*a, **kw)
        finally:
            D._bias_term = saved

    contenders = {"sdpa": sdpa_attention_forward, "ours": D.sdpa_cpu_dropout, "ours, bias as given": bias_as_given}
    names = list(contenders)
    res = {"shape": vars(args), "torch": torch.__version__, "ms": {}, "relative_error_vs_fp32": {}}
    for kind in kinds:
        # Error against the same inputs in float32 (transformers' sdpa): the largest absolute
        # difference over outputs and gradients, over the largest absolute value of each
        want = run(sdpa_attention_forward, kind, check=True, dtype=torch.float32)
        res["relative_error_vs_fp32"][kind] = {
            n: {t: float((x - want[t]).abs().max() / want[t].abs().max()) for t, x in run(contenders[n], kind, True).items()}
            for n in names}
        seconds = {n: [] for n in names}
        for r in range(args.repeats + 1):
            for n in names[r % len(names):] + names[:r % len(names)]:
                s = run(contenders[n], kind)
                if r:                                            # the first round warms up
                    seconds[n].append(s)
        res["ms"][kind] = {n: 1e3 * sorted(s)[len(s) // 2] for n, s in seconds.items()}     # medians
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")

    print(f"\n{args.layers} layers forward + backward, bf16, batch {B} x {H} heads x {dh}, source {args.source}, "
          f"target {args.target}; medians of {args.repeats}\n")
    print("| attention | " + " | ".join(f"{n} (ms)" for n in names) + " | ours vs sdpa | ours vs bias as given |")
    print("|---|" + "---:|" * (len(names) + 2))
    total = {n: 0.0 for n in names}
    for kind, ms in res["ms"].items():
        for n in names:
            total[n] += ms[n]
        print(f"| {kind} | " + " | ".join(f"{ms[n]:.1f}" for n in names)
              + f" | {ms['sdpa'] / ms['ours']:.2f}x | {ms['ours, bias as given'] / ms['ours']:.2f}x |")
    print("| all three | " + " | ".join(f"{total[n]:.1f}" for n in names)
          + f" | {total['sdpa'] / total['ours']:.2f}x | {total['ours, bias as given'] / total['ours']:.2f}x |")
    print("\nlargest error against float32, relative to the largest value of each tensor:\n")
    tensors = list(next(iter(res["relative_error_vs_fp32"].values()))["sdpa"])
    print("| attention | contender | " + " | ".join(tensors) + " |")
    print("|---|---|" + "---:|" * len(tensors))
    for kind, errors in res["relative_error_vs_fp32"].items():
        for n, e in errors.items():
            print(f"| {kind} | {n} | " + " | ".join(f"{e[t]:.1e}" if t in e else "-" for t in tensors) + " |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
