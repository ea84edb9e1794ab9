"""Enlarge an exported Hugging Face model folder, function-preserving.

    python -m pretrain.grow SRC DST [--layers N] [--decoder-layers N] [--hidden H] [--ffn F]
                                    [--heads A] [--at POS ...] [--seed S]

DST loads with the same class as SRC. An ELECTRA export (discriminator in SRC,
generator in SRC/generator) is grown as a pair. When SRC has a tokenizer, the
command checks its work on a few Chinese sentences and prints the largest
|logit difference| between SRC and DST (fails above --tolerance).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from pretrain.surgery import GrowthError, GrowthStep, generator_step, grow, max_difference

CHECK_TEXT = ["今天上午，市图书馆举办了一场传统手工艺讲座，吸引了不少市民参加。",
              "这家酒店的服务态度很好，房间干净，早餐种类也比较丰富。",
              "数学是研究数量、结构、变化以及空间等概念的一门学科。"]


def load(folder: Path):
    import transformers
    config = transformers.AutoConfig.from_pretrained(folder)
    arch = (config.architectures or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise GrowthError(f"{folder}: config.json names no known architecture ({arch!r})")
    return cls.from_pretrained(folder).float().eval()


def check(src, dst, folder: Path, texts: list[str]) -> float | None:
    from tokenizer.loading import load_any_tokenizer
    try:
        tok = load_any_tokenizer(folder)
    except (OSError, ValueError):
        return None
    batch = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=128)
    diff = max_difference(src, dst, batch["input_ids"], batch["attention_mask"])
    return max(diff.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain.grow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--layers", type=int, default=0, help="new number of layers (T5: encoder and decoder)")
    p.add_argument("--decoder-layers", type=int, default=0, help="T5: new decoder depth")
    p.add_argument("--hidden", type=int, default=0, help="new hidden size (an integer multiple)")
    p.add_argument("--ffn", type=int, default=0, help="new feed-forward size")
    p.add_argument("--heads", type=int, default=0, help="new number of attention heads")
    p.add_argument("--at", type=int, nargs="*", default=[], help="insertion points 0..L in the old stack")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.1, help="symmetry-breaking split noise (relative)")
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args(argv)
    step = GrowthStep(layers=args.layers, decoder_layers=args.decoder_layers, hidden=args.hidden,
                      ffn=args.ffn, heads=args.heads, at=list(args.at))
    try:
        if not (args.src / "config.json").is_file():
            raise GrowthError(f"{args.src}: not a Hugging Face model folder (no config.json)")
        pairs = [(args.src, args.dst, step)]
        src = load(args.src)
        grown = {args.src: (src, grow(src, step, args.seed, args.noise))}
        gen_dir = args.src / "generator"
        if (gen_dir / "config.json").is_file():      # ELECTRA: the generator follows the discriminator
            gen = load(gen_dir)
            gstep = generator_step(src, gen, step)
            pairs.append((gen_dir, args.dst / "generator", gstep))
            grown[gen_dir] = (gen, grow(gen, gstep, args.seed + 1, args.noise))
    except GrowthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    worst = 0.0
    for folder, out, s in pairs:
        small, big = grown[folder]
        big.save_pretrained(out, safe_serialization=True)
        try:
            from tokenizer.loading import load_any_tokenizer
            load_any_tokenizer(folder).save_pretrained(out)
        except (OSError, ValueError):
            pass
        diff = check(small, big, folder, CHECK_TEXT)
        n_small = sum(p.numel() for p in small.parameters())
        n_big = sum(p.numel() for p in big.parameters())
        (out / "growth.json").write_text(json.dumps({"source": str(folder), "step": vars(s),
                                                     "max_abs_diff": diff}, indent=1), encoding="utf-8")
        note = "no tokenizer: not checked" if diff is None else f"max |Δ| on {len(CHECK_TEXT)} sentences = {diff:.2e}"
        print(f"{folder} -> {out}: {s.describe()}; {n_small / 1e6:.2f}M -> {n_big / 1e6:.2f}M parameters; {note}")
        worst = max(worst, diff or 0.0)
    if worst > args.tolerance:
        print(f"error: outputs differ by {worst:.2e} > {args.tolerance:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
