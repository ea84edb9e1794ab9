"""Model-card section: RUN/eval/*.json beside the matching published rows, sizes labelled.

``card_section(run_dir)`` returns markdown (empty string when RUN/eval holds no results), for
``pretrain/release.py`` to put in the model card. Published numbers are from
``$ZH_SHARED_DATA/published_results.md``: Chinese-ELECTRA (ymcui/Chinese-ELECTRA README @ 3765b2d,
max (mean) of 10 runs) and WoBERT (ZhuiyiTechnology/WoBERT README @ 6338afd). Those models are
12M-324M parameters trained on tens of GB; ours are what RUN trained, on the split, training
budget and test rows recorded in each JSON, so rows are context, not a like-for-like comparison.
"""
from __future__ import annotations

import json
from pathlib import Path

ELECTRA_SRC = "Chinese-ELECTRA README @ 3765b2d"
WOBERT_SRC = "WoBERT README @ 6338afd"
# task -> (model, parameters, evaluation set, value as published, source)
PUBLISHED = {
    "cmrc2018": [("ELECTRA-small", "12M", "CMRC 2018 dev", "EM 63.4 (62.9) / F1 80.8 (80.2)", ELECTRA_SRC),
                 ("ELECTRA-base", "102M", "CMRC 2018 dev", "EM 68.4 (68.0) / F1 84.8 (84.6)", ELECTRA_SRC),
                 ("BERT-base", "102M", "CMRC 2018 dev", "EM 65.5 (64.4) / F1 84.5 (84.0)", ELECTRA_SRC)],
    "chnsenticorp": [("ELECTRA-small", "12M", "ChnSentiCorp test (ERNIE split)", "acc 94.3 (93.5)", ELECTRA_SRC),
                     ("ELECTRA-base", "102M", "ChnSentiCorp test (ERNIE split)", "acc 94.5 (93.5)", ELECTRA_SRC),
                     ("BERT-base", "102M", "ChnSentiCorp test (ERNIE split)", "acc 95.0 (94.7)", ELECTRA_SRC)],
    "lcqmc": [("ELECTRA-small", "12M", "LCQMC test", "acc 85.9 (85.6)", ELECTRA_SRC),
              ("ELECTRA-base", "102M", "LCQMC test", "acc 87.6 (87.3)", ELECTRA_SRC),
              ("BERT", "102M", "LCQMC test", "acc 86.9 (86.4)", ELECTRA_SRC)],
    "bq": [("ELECTRA-small", "12M", "BQ test", "acc 82.0 (81.7)", ELECTRA_SRC),
           ("ELECTRA-base", "102M", "BQ test", "acc 84.5 (84.0)", ELECTRA_SRC),
           ("BERT", "102M", "BQ test", "acc 84.8 (84.6)", ELECTRA_SRC)],
    "iflytek": [("WoBERT", "base (~110M)", "IFLYTEK dev (CLUE)", "acc 61.15", WOBERT_SRC),
                ("BERT", "base (~110M)", "IFLYTEK dev (CLUE)", "acc 60.31", WOBERT_SRC)],
}


def our_test_set(summary: dict) -> str:
    n = summary["n"]
    return f"{n['test']} test rows ({summary['task']} role table), {n['train']} training rows"


def size_label(params: int) -> str:
    return f"{params / 1e6:.1f}M" if params >= 1e5 else f"{params / 1e3:.0f}k"


def card_section(run_dir: str | Path) -> str:
    summaries = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(run_dir, "eval").glob("*.json"))]
    summaries = [s for s in summaries if "pretrained" in s and "difference" in s]
    if not summaries:
        return ""
    lines = ["## Downstream fine-tuning", "",
             "Fine-tuned with the `transformers` Trainer (`make eval`, `pretrain/evaluation/`); mean ± sd over "
             "seeds on each task's test role, the scratch twin (same architecture, vocabulary and recipe, random "
             "init), and a 95% paired bootstrap interval of the difference. Published rows are other, much "
             "larger models trained far longer, on the full training sets: context, not a like-for-like "
             "comparison.", "",
             "| task | model | parameters | evaluated on | result |", "|---|---|---|---|---|"]
    for s in summaries:
        p, r, d = s["pretrained"]["test"], s["scratch"]["test"], s["difference"]
        size = f"{size_label(s['params'])} (this run, {s['recipe']['steps']} fine-tuning steps)"
        seeds = len(p["seeds"])
        lines.append(f"| {s['task']} | this model | {size} | {our_test_set(s)} | {s['metric']} "
                     f"{p['mean']:.1f} ± {p['std']:.1f} ({seeds} seeds) |")
        lines.append(f"| {s['task']} | scratch twin | {size} | same rows | {s['metric']} {r['mean']:.1f} ± "
                     f"{r['std']:.1f}; difference {d['delta']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}] |")
        for model, params, where, value, src in PUBLISHED.get(s["task"], []):
            lines.append(f"| {s['task']} | {model} (published, {src}) | {params} | {where} | {value} |")
    return "\n".join(lines) + "\n"
