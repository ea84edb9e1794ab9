"""The model card (README.md of a release): data, tokenizer, training curve, evaluations, how to load."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from pretrain.release.verify import PROBE_TEXT


def plot_losses(metrics: list[dict], path: Path) -> dict:
    """loss.png: train and valid loss against step; returns the last values."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train = [(r["step"], r["loss"]) for r in metrics if r.get("split") != "valid" and "loss" in r]
    valid = [(r["step"], r["loss"]) for r in metrics if r.get("split") == "valid" and "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if valid:
        ax.plot(*zip(*valid), "o-", label="valid loss", linewidth=1.2, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {"train_points": len(train), "valid_points": len(valid),
            "last_train": train[-1] if train else None, "last_valid": valid[-1] if valid else None}


def data_statistics(clean_dir: Path) -> dict:
    out = {"clean_dir": str(clean_dir)}
    manifest, stats = clean_dir / "manifest.json", clean_dir / "stats.json"
    if manifest.is_file():
        splits: dict = {}
        for shard in json.loads(manifest.read_text(encoding="utf-8"))["shards"]:
            s = splits.setdefault(shard["split"], {"shards": 0, "documents": 0, "characters": 0})
            s["shards"] += 1
            s["documents"] += shard.get("documents", 0)
            s["characters"] += shard.get("characters", 0)
        out["splits"] = splits
    if stats.is_file():
        out["stats"] = json.loads(stats.read_text(encoding="utf-8"))
    return out


def _table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def leakage_section(stats: dict | None) -> list[str]:
    """Training documents sharing a 13+ character n-gram with an evaluation set (pipeline decontamination)."""
    if not stats or "decontamination_sets" not in stats:
        return ["The cleaning run did not check for evaluation-set overlap (decontamination off or an older run).", ""]
    found = stats.get("decontamination", {})
    rejected = {k.removeprefix("decontam_"): v for k, v in stats.get("rejected", {}).items() if k.startswith("decontam_")}
    rows = [(name, state, f"{found.get(name, 0):,}", f"{rejected.get(name, 0):,}")
            for name, state in sorted(stats["decontamination_sets"].items())]
    return ["Training documents that share a long character n-gram (13+ characters after normalization) with "
            "an evaluation set; matches are dropped (`decontam.action: reject`) or only flagged (`flag`).", "",
            _table(rows, ("evaluation set", "checked", "documents matching", "dropped")), ""]


def init_section(init: dict | None) -> list[str]:
    """Where the run started: the base checkpoint and the vocabulary transplant (RUN/init_report.json)."""
    if not init:
        return ["Trained from random initialization.", ""]
    lines = [f"Continued from `{init['base']}` ({init.get('model_type')}, "
             f"{', '.join(init.get('architectures') or [])}): {init.get('loaded_tensors', '?')} tensors loaded, "
             f"{len(init.get('fresh_tensors', []))} started fresh.", ""]
    t = init.get("transplant")
    if isinstance(t, dict) and "rows" in t:
        rows = t["rows"]
        lines += [f"Vocabulary transplanted from {t['old_vocab_size']:,} to {t['new_vocab_size']:,} rows "
                  f"(in {', '.join(f'`{n}`' for n in t['tensors'])}): " +
                  ", ".join(f"{rows.get(k, 0):,} {k}" for k in ("kept", "special", "composed", "fresh")) +
                  " (composed = mean of the old tokenizer's pieces)."]
    elif init.get("vocab") == "keep":
        lines.append("The checkpoint's own tokenizer was kept (`VOCAB=keep`).")
    tpc = init.get("tokens_per_char")
    if tpc:
        lines.append(f"Tokens per character on {tpc['texts']} held-out texts: {tpc['before']} with the base "
                     f"tokenizer, {tpc['after']} with this one.")
    return lines + [""]


def model_card(model: str, intended_use: str, raw: dict, folders: dict[str, dict], curve: dict, data: dict,
               tok_stats: dict | None, evals: dict, export_info: dict, metrics: list[dict],
               checksums: dict[str, dict], init: dict | None = None) -> str:
    main = folders[""]
    t = raw.get("train", {})
    valid = [r for r in metrics if r.get("split") == "valid"]
    lines = [
        "---", "language: zh", "library_name: transformers", "license: apache-2.0",
        f"tags: [{model}, chinese, pretraining, deepspeed]", "---", "",
        f"# {model} ({raw.get('size', '?')}) — Chinese {main['architecture']}", "",
        f"Pretrained with zh-pretrain (DeepSpeed ZeRO-{t.get('zero_stage', '?')}, {t.get('precision', '?')}) "
        f"for {export_info['step'] if export_info['step'] is not None else '?'} steps; "
        f"{main['parameters'] / 1e6:.2f}M parameters.", "",
        "## Intended use", "", intended_use, "",
        "Out of scope: anything needing factual reliability without fine-tuning and evaluation; "
        "the model reflects the biases of its web/review/news training text.", "",
        "## How to load", "", "```python",
        f"from transformers import AutoTokenizer, {main['auto_class']}",
        'tok = AutoTokenizer.from_pretrained("PATH/TO/release")',
        f'model = {main["auto_class"]}.from_pretrained("PATH/TO/release")',
    ]
    if "sample_generation" in main:
        lines += ['ids = model.generate(**tok(["今天上午，市图书馆举办了一场传统手工艺讲座。"], return_tensors="pt",',
                  '                         return_token_type_ids=False), max_new_tokens=32)',
                  "print(tok.decode(ids[0], skip_special_tokens=True))"]
    else:
        lines += ['out = model(**tok(["今天上午，市图书馆举办了一场传统手工艺讲座。"], return_tensors="pt"))']
    for name, info in folders.items():
        if name:
            lines += [f'{name} = {info["auto_class"]}.from_pretrained("PATH/TO/release/{name}")']
    lines += ["```", ""]
    lines += ["## Files and verification", "", _table(
        [(f"`{name or '.'}`", info["architecture"], info["auto_class"], f"{info['parameters']:,}",
          info.get("checkpoint_tensors_compared", "no checkpoint")) for name, info in folders.items()],
        ("folder", "architecture", "loads with", "parameters", "tensors equal to checkpoint")), "",
        f"Each folder was reloaded with its Auto class after writing; its outputs on a fixed Chinese input "
        f"(\"{PROBE_TEXT}\") are identical to `RUN/export`'s, and its weights to the checkpoint "
        f"`{export_info['checkpoint']}`" + (" (export rebuilt from that checkpoint)" if export_info["rebuilt"] else "")
        + ".", ""]
    if "sample_generation" in main:
        lines += [f"Greedy output for that input: “{main['sample_generation']}”", ""]
    lines += ["## Training curve", "", "![loss curve](loss.png)", ""]
    if curve["last_train"]:
        lines.append(f"Final train loss {curve['last_train'][1]:.4f} at step {curve['last_train'][0]}"
                     + (f"; final valid loss {curve['last_valid'][1]:.4f} at step {curve['last_valid'][0]}."
                        if curve["last_valid"] else "."))
    if valid:
        last = valid[-1]
        lines += ["", "Last validation record: " + ", ".join(f"{k} {_fmt(v)}" for k, v in last.items()
                                                             if k not in ("split",)) + "."]
    lines += ["", "## Evaluation", ""]
    if evals:
        for task, result in evals.items():
            if isinstance(result, dict):
                flat = {k: v for k, v in result.items() if isinstance(v, (int, float))}
                lines.append(f"- **{task}**: " + (", ".join(f"{k} {_fmt(v)}" for k, v in flat.items()) or
                                                  json.dumps(result, ensure_ascii=False)[:500]))
            else:
                lines.append(f"- **{task}**: {result}")
    else:
        lines.append("- no downstream task is defined for this model")
    lines += ["", "## Starting point", ""] + init_section(init)
    lines += ["## Leakage (evaluation-set overlap)", ""] + leakage_section(data.get("stats"))
    lines += ["## Training data", ""]
    if "splits" in data:
        lines += [_table([(s, v["shards"], f"{v['documents']:,}", f"{v['characters']:,}")
                          for s, v in sorted(data["splits"].items())], ("split", "shards", "documents", "characters")), ""]
    if "stats" in data:
        s = data["stats"]
        rejected = s.get("rejected", {})
        lines += [f"Cleaning pipeline (`{data['clean_dir']}`): read {s.get('read', '?'):,} documents, wrote "
                  f"{s.get('written', '?'):,}; removed {s.get('duplicates_exact', 0):,} exact and "
                  f"{s.get('duplicates_near', 0):,} near duplicates; rejected {sum(rejected.values()):,}"
                  + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) + ")" if rejected else "")
                  + ".", ""]
    if "splits" not in data and "stats" not in data:
        lines += [f"Data statistics not found in `{data['clean_dir']}`.", ""]
    lines += ["## Tokenizer", ""]
    if tok_stats:
        keep = {k: v for k, v in tok_stats.items() if not isinstance(v, dict)}
        lines += [", ".join(f"{k}: {v}" for k, v in keep.items()) + "."]
        for k, v in tok_stats.items():
            if isinstance(v, dict):
                lines.append(f"- {k}: " + ", ".join(f"{kk} {_fmt(vv)}" for kk, vv in v.items()
                                                    if not isinstance(vv, (dict, list))))
        lines.append("")
    else:
        lines += ["Tokenizer statistics not found.", ""]
    lines += ["## Hyperparameters", "", "From the run's `config.yaml`:", "", "```yaml",
              yaml.safe_dump({k: raw[k] for k in ("model", "size", "arch", "train", "objective") if k in raw},
                             allow_unicode=True, sort_keys=False).rstrip(), "```", ""]
    lines += ["## Checksums", "", "sha256 of every file (also in `release.json`); "
              "`python -m pretrain.release --verify DIR` checks them.", "",
              _table([(f"`{name}`", f"{meta['size']:,}", f"`{meta['sha256']}`") for name, meta in checksums.items()],
                     ("file", "bytes", "sha256")), ""]
    return "\n".join(lines)
