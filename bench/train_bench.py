"""Training-runtime benchmark: our DeepSpeed runtime against plain transformers + AdamW loops.

Three model families, each with the same model, same initial weights (seeded) and the same
documents in the same order for every runtime, measured in the same run:

  t5    T5 v1.1 / mT5 (MT5ForConditionalGeneration) on T5-PEGASUS pseudo-summary pairs
        plain      a bare loop: model(**batch).loss, backward, clip, torch AdamW step (fp32)
        zero0/2/3  `python -m pretrain.train` (the DeepSpeed engine), ZeRO stage 0/2/3, fp32
        zero2-bf16 DeepSpeed bf16 at ZeRO-2 (bf16 weights/activations, fp32 master weights
                   and optimizer state)
        zero0-amp-bf16[-compile], zero2-amp-bf16-compile
                   train.precision=amp-bf16: fp32 weights, gradients and optimizer, matmuls in
                   bf16 under DeepSpeed's torch_autocast; -compile adds train.compile=true
                   (torch.compile of the transformer body, dynamic shapes)
        plain-autocast-bf16  the plain loop under torch.autocast(bfloat16), for reference: what a
                   user gets from bf16 alone, without the rest of the runtime
  mlm   BERT masked LM (an encoder objective)
        plain      what users write: each document cut to the sequence length, padded,
                   DataCollatorForLanguageModeling masks (15 %, 80/10/10),
                   BertForMaskedLM(**batch).loss (logits at every position), torch AdamW, fp32
        plain-autocast-bf16  as for t5
        zero0 / zero2 / zero2-bf16 / zero*-amp-bf16   our mlm-proposal objective with uniform
                   BERT masking: documents packed into full rows, vocabulary logits only at the
                   masked positions, no proposal network

  electra    ELECTRA (generator 1/4 of the discriminator, 15 % masking, loss = MLM + 50 RTD)
        plain      the Hugging Face heads as users call them: generator logits at every position
                   (labels=), torch.multinomial sampling, ElectraForPreTraining's own loss, fp32
        zero0 / zero2 / zero0-amp-bf16   our electra objective: generator logits at the masked
                   positions only, inverse-CDF sampling, same masks and documents

Reports text tokens/s (padding excluded), the speed-up over the plain loop, ZeRO-2/3
overhead against ZeRO-0, and MFU against this machine's measured matmul peak for the run's
precision (model FLOPs: 6 x matmul parameters x the tokens each part sees, counted once per
family and used for every runtime of that family). On CPUs with AVX512-BF16 the bf16 peak is
several times the fp32 peak, which is where most of the bf16 rows' speed comes from.

  .venv/bin/python bench/train_bench.py [--family t5,mlm] [--steps 200] [--d-model 256] [--layers 4]
Writes bench/results/train.json and prints one markdown table per family.
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


def matmul_peak_flops(dtype_name: str = "float32", n: int = 2048, repeats: int = 10) -> float:
    """Measured matmul throughput of this machine with all threads (FLOP/s)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
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


def common_overrides(args) -> list[str]:
    return [f"train.steps={args.steps}", f"train.micro_batch_size={args.batch}", f"train.log_every={args.log_every}",
            "train.eval_every=100000", "train.save_every=100000", "train.eval_generate=0", "train.eval_batches=1",
            "train.seed=1", "train.warmup_steps=20"]


def family_overrides(family: str, args) -> list[str]:
    a = args
    if family == "electra":     # discriminator of this size, generator 1/4 of its width (the recipe)
        return [f"arch.d_model={a.d_model}", f"arch.d_ff={a.d_model * 4}", f"arch.num_layers={a.layers}",
                f"arch.num_heads={a.d_model // 64}", "arch.dropout_rate=0.1", "train.max_source_len=128"]
    if family == "t5":
        return [f"arch.d_model={a.d_model}", f"arch.d_ff={a.d_model * 2}", f"arch.num_layers={a.layers}",
                f"arch.num_decoder_layers={a.layers}", f"arch.num_heads={a.d_model // 64}", "arch.d_kv=64",
                "train.max_source_len=192", "train.max_target_len=64"]
    return [f"arch.d_model={a.d_model}", f"arch.d_ff={a.d_model * 4}", f"arch.num_layers={a.layers}",
            f"arch.num_heads={a.d_model // 64}", "arch.dropout_rate=0.1", "train.max_source_len=128",
            "objective.sampling=uniform"]


CONFIGS = {"t5": "t5-pegasus", "mlm": "mlm-proposal", "electra": "electra"}


def load_objective(family: str, overrides: list[str]):
    from pretrain.config import config_path, load_config


    cfg = load_config(config_path(CONFIGS[family]), overrides)
    return cfg, cfg.objective_class(cfg)


def mlm_flops_per_token(mlm, tokens: int, masked: int) -> float:
    """6 x (encoder layer + pooler-free matmul parameters) per token + 6 x LM-head parameters per masked token."""
    enc = sum(p.numel() for n, p in mlm.named_parameters() if ".encoder.layer." in n or n.startswith("encoder.layer."))
    head = mlm.config.hidden_size * (mlm.config.hidden_size + mlm.config.vocab_size)
    return 6.0 * (enc * tokens + head * masked) / max(tokens, 1)


def electra_flops_per_token(pair, tokens: int, masked: int) -> float:
    """6 x encoder matmul parameters (generator + discriminator) per token, + the generator's
    vocabulary head per masked token and the discriminator head per token."""
    enc = sum(p.numel() for n, p in pair.named_parameters() if ".encoder.layer." in n)
    g, d = pair.generator.config, pair.discriminator.config
    gen_head = g.hidden_size * g.embedding_size + g.embedding_size * g.vocab_size
    disc_head = d.hidden_size * d.hidden_size + d.hidden_size
    return 6.0 * (enc * tokens + gen_head * masked + disc_head * tokens) / max(tokens, 1)


def plain_electra_loss(pair, batch: dict):
    """What users write with the Hugging Face heads: generator logits at every position
    (``labels=``), torch.multinomial sampling, the discriminator's own BCE loss."""
    import torch

    ids, am, mask = batch["input_ids"], batch["attention_mask"], batch["mlm_mask"]
    gen = pair.generator(input_ids=batch["masked_input_ids"], attention_mask=am,
                         labels=ids.masked_fill(~mask, -100))
    with torch.no_grad():
        sampled = torch.multinomial(torch.softmax(gen.logits[mask].float(), dim=-1), 1).squeeze(-1)
    fake = ids.clone()
    fake[mask] = sampled
    disc = pair.discriminator(fake, attention_mask=am, labels=(fake != ids).long())
    return gen.loss + pair.rtd_weight * disc.loss


def plain_loop(family: str, overrides: list[str], steps: int, log_every: int, autocast: bool = False) -> dict:
    """A bare transformers + AdamW loop over the same documents (the baseline users would write).

    ``autocast``: the same loop under torch.autocast(bfloat16), for reference only.
    """
    import torch
    from transformers import DataCollatorForLanguageModeling

    from pretrain.data import ShardStream, batches, list_shards

    cfg, obj = load_objective(family, overrides)
    torch.manual_seed(cfg.train.seed)
    model = obj.build_mlm() if family == "mlm" else obj.build_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    stream = ShardStream(list_shards(obj.train_dir, "train"), 0, 1, seed=cfg.train.seed)
    it = batches(stream, cfg.train.micro_batch_size)
    tok = obj.tokenizer
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15) if family == "mlm" else None
    rates, tokens, start, fpt = [], 0, time.perf_counter(), []
    for step in range(1, steps + 1):
        records = next(it)
        if family == "t5":
            batch = obj.collate(records)
            n_tok = obj.tokens_in(batch)
            fpt.append(obj.train_flops(model, batch) / n_tok)
        elif family == "electra":
            batch = obj.collate(records)
            n_tok = obj.tokens_in(batch)
            fpt.append(electra_flops_per_token(model, n_tok, int(batch["mlm_mask"].sum())))
        else:
            enc = tok([r["text"] for r in records], truncation=True, max_length=cfg.train.max_source_len)
            batch = collator([{"input_ids": ids} for ids in enc["input_ids"]])
            n_tok = int(batch["attention_mask"].sum())
            fpt.append(mlm_flops_per_token(model, n_tok, int((batch["labels"] != -100).sum())))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = plain_electra_loss(model, batch) if family == "electra" else model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += n_tok
        if step % log_every == 0:
            rates.append(tokens / (time.perf_counter() - start))
            tokens, start = 0, time.perf_counter()
    return {"tokens_per_s": sum(rates[1:]) / max(1, len(rates) - 1), "final_loss": loss.item(),
            "params": sum(p.numel() for p in model.parameters()), "flops_per_token": sum(fpt) / len(fpt)}


def runtime(family: str, overrides: list[str], zero: int, precision: str, compiled: bool, work: Path) -> dict:
    run_dir = work / f"run-{family}-zero{zero}-{precision}-{int(compiled)}"
    cmd = [sys.executable, "-m", "pretrain.train", "--config", f"configs/{CONFIGS[family]}.yaml", f"run_dir={run_dir}",
           f"train.zero_stage={zero}", f"train.precision={precision}", f"train.compile={str(compiled).lower()}",
           *overrides]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    recs = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r.get("split") != "valid"]
    rates = [r["tokens_per_s"] for r in train[1:]]        # the first window includes warm-up
    data = [r["data_time_frac"] for r in train[1:]]
    return {"tokens_per_s": sum(rates) / len(rates), "final_loss": train[-1]["loss"],
            "data_time_frac": sum(data) / len(data)}


# (ZeRO stage, precision, torch.compile). The first window of every run (compilation
# included) is left out of tokens/s (compilation takes 1-2 min of wall time at start).
RUNTIMES = {"t5": [(0, "fp32", False), (2, "fp32", False), (3, "fp32", False), (2, "bf16", False),
                   (0, "amp-bf16", False), (0, "amp-bf16", True), (2, "amp-bf16", True)],
            "electra": [(0, "fp32", False), (2, "fp32", False), (0, "amp-bf16", False)],
            "mlm": [(0, "fp32", False), (2, "fp32", False), (2, "bf16", False), (0, "amp-bf16", False),
                    (2, "amp-bf16", False)]}


def table(family: str, res: dict, peak: float, peak_bf16: float) -> list[str]:
    """MFU is against the peak of the run's own precision (fp32 or bf16 matmul)."""
    base = res["plain"]["tokens_per_s"]
    fpt = res["plain"]["flops_per_token"]
    lines = ["| runtime | tokens/s | vs plain loop | MFU | overhead vs ZeRO-0 | time in data + tokenization | final loss |",
             "|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        r["speedup_vs_plain"] = r["tokens_per_s"] / base
        r["mfu"] = fpt * r["tokens_per_s"] / (peak_bf16 if "bf16" in name else peak)
        if name in ("zero2", "zero3") and "zero0" in res:
            r["overhead_vs_zero0"] = res["zero0"]["tokens_per_s"] / r["tokens_per_s"]
        over = f"{r['overhead_vs_zero0']:.2f}x" if "overhead_vs_zero0" in r else "-"
        data = f"{100 * r['data_time_frac']:.1f}%" if "data_time_frac" in r else "-"
        lines.append(f"| {name} | {r['tokens_per_s']:.0f} | {r['speedup_vs_plain']:.2f}x | {100 * r['mfu']:.1f}% "
                     f"| {over} | {data} | {r['final_loss']:.3f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="t5,mlm,electra", help="comma list of t5, mlm, electra")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "train.json"))
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    families = [f for f in args.family.split(",") if f]
    peak, peak_bf16 = matmul_peak_flops("float32"), matmul_peak_flops("bfloat16")
    out = {"cpu_count": os.cpu_count(), "matmul_peak_gflops": peak / 1e9, "matmul_peak_bf16_gflops": peak_bf16 / 1e9,
           "steps": args.steps, "batch": args.batch, "load_avg_start": os.getloadavg(), "families": {}}
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare(work)
        for family in families:
            overrides = data + common_overrides(args) + family_overrides(family, args)
            res = {"plain": plain_loop(family, overrides, args.steps, args.log_every)}
            res["plain-autocast-bf16"] = plain_loop(family, overrides, args.steps, args.log_every, autocast=True)
            for zero, precision, compiled in RUNTIMES[family]:
                name = f"zero{zero}" + ("" if precision == "fp32" else f"-{precision}") + ("-compile" if compiled else "")
                res[name] = runtime(family, overrides, zero, precision, compiled, work)
            model = {"t5": f"T5 v1.1 d_model={args.d_model} layers={args.layers}+{args.layers}, source 192 / target 64",
                     "mlm": f"BERT MLM hidden={args.d_model} layers={args.layers}, sequence 128",
                     "electra": f"ELECTRA discriminator hidden={args.d_model} layers={args.layers} + generator 1/4, "
                                f"sequence 128"}[family]
            lines += ["", f"{family}: {model}, {res['plain']['params'] / 1e6:.1f}M parameters, batch {args.batch}, "
                          f"{args.steps} steps", ""] + table(family, res, peak, peak_bf16)
            out["families"][family] = {"model": model, "params": res["plain"]["params"], "results": res}
    out["load_avg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, bf16 {peak_bf16 / 1e9:.0f} GFLOP/s; "
          f"load {out['load_avg_start'][0]:.1f} at start, {out['load_avg_end'][0]:.1f} at end")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
