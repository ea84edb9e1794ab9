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

A second table times the relative bias itself (``compute_bias`` of the first layer of each stack,
forward + backward, bf16 weights): transformers' against ``pretrain.models.relative_bias_by_offset``,
with each one's error in the bias table's gradient against the same computation in float64.

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
    res["relative_bias"] = relative_bias(args, kinds)
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
    print(f"\nT5's relative bias, compute_bias forward + backward, bf16 weights; medians of {args.repeats}\n")
    print("| stack | transformers (ms) | by offset (ms) | speed-up | table gradient error, transformers | by offset |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, r in res["relative_bias"].items():
        print(f"| {kind} | {r['ms']['transformers']:.2f} | {r['ms']['by offset']:.2f} | "
              f"{r['ms']['transformers'] / r['ms']['by offset']:.1f}x | {r['error']['transformers']:.1e} | "
              f"{r['error']['by offset']:.1e} |")
    print(f"wrote {args.out}")
    return 0


def relative_bias(args, kinds: dict) -> dict:
    """compute_bias of an encoder's and a decoder's first attention: transformers' against
    ``relative_bias_by_offset``; ms (medians) and the bias table's gradient error relative to its
    largest value, against transformers' computation in float64."""
    import copy
    import time

    import torch
    from transformers import MT5Config
    from transformers.models.mt5.modeling_mt5 import MT5Attention

    from pretrain.models import relative_bias_by_offset

    out = {}
    for kind, (lq, lk, causal, relative) in kinds.items():
        if not relative:
            continue
        cfg = MT5Config(d_model=args.heads * args.head_dim, d_kv=args.head_dim, num_heads=args.heads,
                        relative_attention_num_buckets=32, relative_attention_max_distance=128, is_decoder=causal)
        torch.manual_seed(0)
        exact = MT5Attention(cfg, has_relative_attention_bias=True, layer_idx=0).double()
        theirs = copy.deepcopy(exact).bfloat16()
        ours = copy.deepcopy(theirs)
        relative_bias_by_offset(ours)
        g = torch.randn(1, args.heads, lq, lk, dtype=torch.float64)
        exact.compute_bias(lq, lk).backward(g)
        want = exact.relative_attention_bias.weight.grad
        seconds, error = {"transformers": [], "by offset": []}, {}
        for r in range(args.repeats + 1):
            for name, m in (("transformers", theirs), ("by offset", ours))[::1 if r % 2 else -1]:
                m.relative_attention_bias.weight.grad = None
                t = time.perf_counter()
                m.compute_bias(lq, lk).backward(g.bfloat16())
                if r:
                    seconds[name].append(time.perf_counter() - t)
                got = m.relative_attention_bias.weight.grad.double()
                error[name] = float((got - want).abs().max() / want.abs().max())
        out[kind] = {"ms": {n: 1e3 * sorted(v)[len(v) // 2] for n, v in seconds.items()}, "error": error}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
