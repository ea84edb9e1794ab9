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
SIZES = {"ELECTRA-small": "12M", "ELECTRA-base": "102M", "BERT-base": "102M", "WoBERT": "base (~110M)",
         "BERT (WoBERT table)": "base (~110M)"}
# task -> (evaluation set, source, {model: value as published: max (mean) where two are given})
PUBLISHED = {
    "cmrc2018": ("CMRC 2018 dev", ELECTRA_SRC, {"ELECTRA-small": "EM 63.4 (62.9) / F1 80.8 (80.2)",
                                                "ELECTRA-base": "EM 68.4 (68.0) / F1 84.8 (84.6)",
                                                "BERT-base": "EM 65.5 (64.4) / F1 84.5 (84.0)"}),
    "chnsenticorp": ("ChnSentiCorp test (ERNIE split)", ELECTRA_SRC,
                     {"ELECTRA-small": "acc 94.3 (93.5)", "ELECTRA-base": "acc 94.5 (93.5)",
                      "BERT-base": "acc 95.0 (94.7)"}),
    "lcqmc": ("LCQMC test", ELECTRA_SRC, {"ELECTRA-small": "acc 85.9 (85.6)", "ELECTRA-base": "acc 87.6 (87.3)",
                                          "BERT-base": "acc 86.9 (86.4)"}),
    "bq": ("BQ test", ELECTRA_SRC, {"ELECTRA-small": "acc 82.0 (81.7)", "ELECTRA-base": "acc 84.5 (84.0)",
                                    "BERT-base": "acc 84.8 (84.6)"}),
    "iflytek": ("IFLYTEK dev (CLUE)", WOBERT_SRC, {"WoBERT": "acc 61.15", "BERT (WoBERT table)": "acc 60.31"}),
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
        where, src, rows = PUBLISHED.get(s["task"], ("", "", {}))
        for model, value in rows.items():
            lines.append(f"| {s['task']} | {model} (published, {src}) | {SIZES[model]} | {where} | {value} |")
    return "\n".join(lines) + "\n"
