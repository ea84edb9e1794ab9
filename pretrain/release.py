"""A verified Hugging Face release of a training run, with a model card (``make release``).

  python -m pretrain.release --run runs/t5-pegasus [--model t5-pegasus] [--out DIR]
                             [--skip-eval] [--eval-data PATH] [--eval-option KEY=VALUE ...]

Writes ``RUN/release/`` (and ``RUN/release/generator/`` for ELECTRA): safetensors
weights, config, generation config (encoder-decoders), tokenizer files, ``loss.png``
and ``README.md`` (the model card: data and tokenizer statistics, hyperparameters,
loss curve, evaluation results, intended use, how to load).

Everything is derived from the folders' ``config.json`` (``architectures`` and
``model_type``), so any objective's export works. Before writing, ``RUN/export`` is
checked against the latest checkpoint and rebuilt from it when missing, stale or
holding ZeRO-3 placeholders (ZeRO-3 shards are consolidated with ``zero_to_fp32``).
After writing, every folder is reloaded through its ``transformers`` Auto class and
must give logits equal to ``RUN/export``'s on a fixed Chinese input, and its weights
must equal the checkpoint's.
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from pretrain import checkpoint as ckpt
from pretrain.config import REPO_ROOT, ConfigError, config_path, load_config

log = logging.getLogger("pretrain")
PROBE_TEXT = "今天上午，市图书馆举办了一场传统手工艺讲座，吸引了许多市民参加。"
# (Auto class, transformers mapping of model_type -> architecture) in the order they are tried.
AUTO_CLASSES = (("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
                ("AutoModelForPreTraining", "MODEL_FOR_PRETRAINING_MAPPING_NAMES"),
                ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
                ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
                ("AutoModel", "MODEL_MAPPING_NAMES"))
# Downstream evaluations (pretrain/evaluate.py tasks) per model.
EVAL_TASKS = {"t5-pegasus": ("summarization",), "electra": ("sts",), "mlm-proposal": ("mlm", "sts"),
              "roformer-sim": ("sts",)}
INTENDED_USE = {
    "t5-pegasus": "Chinese text generation: fine-tune for summarization, title generation, question "
                  "generation or other sequence-to-sequence tasks (the pretraining task is writing the "
                  "pseudo summary of a document, so zero-shot outputs are summary-like but unpolished).",
    "electra": "Chinese understanding: fine-tune the discriminator for classification, matching, "
               "sequence labelling or reading comprehension; the generator is a small masked LM "
               "released for completeness and continued pretraining.",
    "mlm-proposal": "Chinese understanding: fine-tune for classification, matching or sequence labelling, "
                    "or use as a fill-mask model.",
    "roformer-sim": "Chinese sentence similarity and retrieval (sentence vectors compared by cosine, pooled as "
                    "`sentence_pooling` in config.json says: mean over tokens, [CLS], or first-last-avg; "
                    "`pretrain.objectives.roformer_sim.encode` does it) and paraphrase generation.",
}
COPY_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".py")
SKIP_FILES = {"training_step.json"}


class ReleaseError(RuntimeError):
    """A release that cannot be made or fails verification (one line)."""


# ---------------------------------------------------------------- run directory
def read_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ReleaseError(f"{path}: not found; is {run_dir} a training run (make pretrain)?")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def is_hf_model_folder(folder: Path) -> bool:
    """A transformers model folder: a config.json that names its model_type."""
    try:
        return "model_type" in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False


def model_folders(root: Path) -> list[tuple[str, Path]]:
    """[('', root), ('generator', root/generator), ...]: the root and each transformers sub-folder."""
    out = [("", root)]
    out += [(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and is_hf_model_folder(p)]
    return out


def extra_folders(root: Path) -> list[Path]:
    """Sub-folders that are not transformers models (e.g. MAP-Net's mask_proposal/): shipped as they are."""
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not is_hf_model_folder(p)]


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    state = {}
    for f in weight_files(folder):
        state.update(load_file(str(f)))
    return state


def master_weights_in_optimizer(zero_stage: int, precision: str) -> bool:
    """Whether the fp32 weights live only in ZeRO's optimizer partitions (read them with zero_to_fp32).

    ZeRO-3 partitions the parameters themselves; under bf16/fp16, ZeRO-1/2 keep bf16 copies in
    the model and the fp32 master weights in the optimizer state. ZeRO-0 keeps the masters
    inside the model-states file, so there the model's half-precision weights are exported.
    """
    return zero_stage == 3 or (zero_stage in (1, 2) and precision in ("bf16", "fp16"))


def checkpoint_state(ckpt_dir: Path, tag: str, zero_stage: int, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """The trained weights exactly as the trainer's export saw them (fp32)."""
    if master_weights_in_optimizer(zero_stage, precision):
        # Gather the fp32 master weights from the optimizer shards (DeepSpeed's zero_to_fp32).
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    else:
        files = sorted((ckpt_dir / tag).glob("mp_rank_*_model_states.pt"))
        if not files:
            raise ReleaseError(f"{ckpt_dir / tag}: no mp_rank_*_model_states.pt")
        state = torch.load(files[0], map_location="cpu", weights_only=False)["module"]
    return {k: v.detach().float().cpu() for k, v in state.items() if torch.is_tensor(v)}


def export_is_current(export: Path, step: int | None) -> str | None:
    """None if RUN/export holds complete weights for `step`, else why not."""
    if not (export / "config.json").is_file() or not weight_files(export):
        return "RUN/export has no weights"
    for name, folder in model_folders(export):
        empty = [k for k, v in load_weights(folder).items() if v.numel() == 0]
        if empty:
            return f"{folder}: {len(empty)} empty tensors (unconsolidated ZeRO-3 placeholders), e.g. {empty[0]}"
    marker = export / "training_step.json"
    if step is not None and marker.is_file() and json.loads(marker.read_text())["step"] != step:
        return f"RUN/export is from step {json.loads(marker.read_text())['step']}, latest checkpoint is {step}"
    return None


def run_config_object(raw: dict):
    """RunConfig of a run (its config.yaml over the model's YAML) for rebuilding an objective."""
    over = {k: v for k, v in raw.items() if k != "size"}
    return load_config(config_path(raw["model"]), over, size=raw.get("size"))


def ensure_export(run_dir: Path, raw: dict) -> tuple[Path, dict]:
    """RUN/export, rebuilt from the latest checkpoint when missing, stale or unconsolidated."""
    export = run_dir / "export"
    latest = ckpt.find_latest(run_dir / "checkpoints")
    step = latest[1] if latest else None
    why = export_is_current(export, step)
    info = {"step": step, "checkpoint": latest[0] if latest else None, "rebuilt": False}
    if why is None:
        return export, info
    if latest is None:
        raise ReleaseError(f"{why} and {run_dir / 'checkpoints'} holds no complete checkpoint; "
                           f"run make pretrain first")
    log.info("%s: rebuilding it from checkpoint %s", why, latest[0])
    from pretrain.objectives import get_objective_class
    cfg = run_config_object(raw)
    state = checkpoint_state(run_dir / "checkpoints", latest[0], cfg.train.zero_stage, cfg.train.precision)
    tmp = export.with_name("export.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    get_objective_class(cfg.model)(cfg).export(state, tmp)
    (tmp / "training_step.json").write_text(json.dumps({"step": step}), encoding="utf-8")
    shutil.rmtree(export, ignore_errors=True)
    os.replace(tmp, export)
    info["rebuilt"] = True
    return export, info


# ---------------------------------------------------------------- models
def auto_class_name(config) -> str:
    """The Auto class that maps config.model_type to config.architectures[0] (AutoModel if none)."""
    from transformers.models.auto import modeling_auto
    arch = (getattr(config, "architectures", None) or [""])[0]
    for auto, mapping in AUTO_CLASSES:
        names = getattr(modeling_auto, mapping, {}).get(config.model_type)
        if arch and (names == arch or (isinstance(names, (tuple, list)) and arch in names)):
            return auto
    return "AutoModel"


def load_model(folder: Path):
    import transformers
    config = transformers.AutoConfig.from_pretrained(folder)
    auto = auto_class_name(config)
    model = getattr(transformers, auto).from_pretrained(folder)
    model.eval()
    return model, auto


def probe_inputs(model, tokenizer) -> dict:
    enc = tokenizer([PROBE_TEXT], return_tensors="pt")
    accepted = set(inspect.signature(model.forward).parameters)
    batch = {k: v for k, v in enc.items() if k in accepted}
    if model.config.is_encoder_decoder:
        start = model.config.decoder_start_token_id
        batch["decoder_input_ids"] = torch.cat([torch.tensor([[start]]), enc["input_ids"][:, 1:8]], dim=1)
    return batch


@torch.no_grad()
def probe_output(model, batch) -> torch.Tensor:
    out = model(**batch)
    for name in ("logits", "prediction_logits", "last_hidden_state"):
        value = getattr(out, name, None)
        if torch.is_tensor(value):
            return value
    return out[0]


def match_key(name: str, keys: list[str], folder_name: str, others: set[str]) -> str | None:
    """The checkpoint key of a release tensor: equal, or the unique one ending in '.name'."""
    if name in keys:
        return name
    found = [k for k in keys if k.endswith("." + name)]
    if len(found) > 1:
        prefix = f"{folder_name}." if folder_name else None
        found = [k for k in found if (k.startswith(prefix) if prefix else k.split(".")[0] not in others)]
    return found[0] if len(found) == 1 else None


def verify(release: Path, export: Path, ckpt_state: dict | None, folder_name: str, others: set[str]) -> dict:
    """Reload `release` through its Auto class; logits must equal `export`'s, weights the checkpoint's."""
    from transformers import AutoTokenizer
    model, auto = load_model(release)
    reference, _ = load_model(export)
    tokenizer = AutoTokenizer.from_pretrained(release)
    batch = probe_inputs(model, tokenizer)
    got, want = probe_output(model, batch), probe_output(reference, batch)
    if got.shape != want.shape or not torch.equal(got, want):
        raise ReleaseError(f"{release}: logits differ from {export} (max |diff| "
                           f"{(got - want).abs().max().item() if got.shape == want.shape else 'shape'})")
    if not torch.isfinite(got).all():
        raise ReleaseError(f"{release}: non-finite outputs on the probe input")
    result = {"auto_class": auto, "architecture": model.config.architectures[0],
              "parameters": sum(p.numel() for p in model.parameters()), "probe_shape": list(got.shape)}
    if ckpt_state is not None:
        weights = load_weights(release)
        keys = list(ckpt_state)
        compared, worst = 0, 0.0
        for name, tensor in weights.items():
            key = match_key(name, keys, folder_name, others)
            if key is None or ckpt_state[key].shape != tensor.shape:
                continue
            worst = max(worst, (ckpt_state[key] - tensor.float()).abs().max().item())
            compared += 1
        if compared == 0:
            raise ReleaseError(f"{release}: no tensor could be matched to the checkpoint by name")
        if worst != 0.0:
            raise ReleaseError(f"{release}: weights differ from the checkpoint (max |diff| {worst:g})")
        result["checkpoint_tensors_compared"] = f"{compared}/{len(weights)}"
    if model.config.is_encoder_decoder:
        ids = model.generate(**tokenizer([PROBE_TEXT], return_tensors="pt", return_token_type_ids=False),
                             max_new_tokens=24, num_beams=1, do_sample=False)
        result["sample_generation"] = tokenizer.decode(ids[0], skip_special_tokens=True)
    return result


def copy_folder(src: Path, dst: Path) -> None:
    """Weights, configs and tokenizer files of one model folder (not its sub-folders)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in COPY_SUFFIXES and f.name not in SKIP_FILES:
            shutil.copy2(f, dst / f.name)


def ensure_generation_config(folder: Path) -> None:
    """Encoder-decoders ship a generation_config.json (start / end / pad tokens)."""
    from transformers import AutoConfig, GenerationConfig
    config = AutoConfig.from_pretrained(folder)
    if config.is_encoder_decoder and not (folder / "generation_config.json").is_file():
        GenerationConfig(decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id,
                         pad_token_id=config.pad_token_id).save_pretrained(folder)


# ---------------------------------------------------------------- card
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


def run_evaluations(model_dir: Path, model: str, skip: bool, data: str | None, options: list[str],
                    timeout: int, tasks: tuple[str, ...] | None = None,
                    defaults: dict[str, str] | None = None) -> dict[str, dict | str]:
    """{task: metrics} via `python -m pretrain.evaluate`, or {task: "not run: <reason>"}.

    `data` applies to every task; otherwise `defaults[task]` (e.g. the run's held-out
    text for mlm), otherwise the task's own default data.
    """
    import importlib.util
    results: dict[str, dict | str] = {}
    for task in tasks if tasks is not None else EVAL_TASKS.get(model, ()):
        if skip:
            results[task] = "not run: skipped (--skip-eval)"
            continue
        if importlib.util.find_spec(f"pretrain.evaluation.{task}") is None:
            results[task] = f"not run: pretrain/evaluation/{task}.py is not available in this checkout"
            continue
        cmd = [sys.executable, "-m", "pretrain.evaluate", "--model", str(model_dir), "--task", task,
               *(["--data", data or (defaults or {}).get(task)] if data or (defaults or {}).get(task) else []), *[a for o in options for a in ("-o", o)]]
        log.info("evaluating: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            results[task] = f"not run: timed out after {timeout} s"
            continue
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines:
            results[task] = json.loads(lines[-1])
        else:
            errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
            results[task] = (f"not run: {errors[-1].removeprefix('error: ')}" if errors else
                             f"not run: the evaluator exited with status {proc.returncode}")
    return results


def _table(rows: list[tuple], header: tuple) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def model_card(model: str, raw: dict, folders: dict[str, dict], curve: dict, data: dict, tok_stats: dict | None,
               evals: dict, export_info: dict, metrics: list[dict]) -> str:
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
        "## Intended use", "", INTENDED_USE.get(model, "Chinese language modelling research."), "",
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
    lines += ["", "## Training data", ""]
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
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def release(run_dir: str | Path, model: str | None = None, out: str | Path | None = None, skip_eval: bool = False,
            eval_data: str | None = None, eval_options: list[str] = (), eval_timeout: int = 3600) -> dict:
    run_dir = Path(run_dir)
    raw = read_run_config(run_dir)
    if model and raw.get("model") != model:
        raise ReleaseError(f"{run_dir}: run is MODEL={raw.get('model')}, not {model}")
    model = raw["model"]
    out = Path(out) if out else run_dir / "release"
    export, export_info = ensure_export(run_dir, raw)
    ckpt_state = None
    if export_info["checkpoint"]:
        train = raw.get("train", {})
        ckpt_state = checkpoint_state(run_dir / "checkpoints", export_info["checkpoint"],
                                      int(train.get("zero_stage", 0)), str(train.get("precision", "fp32")))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    sources = model_folders(export)
    others = {name for name, _ in sources if name}
    folders = {}
    for name, src in sources:
        dst = tmp / name if name else tmp
        copy_folder(src, dst)
        ensure_generation_config(dst)
        folders[name] = verify(dst, src, ckpt_state, name, others)
        log.info("verified %s: %s", dst, folders[name])
    for extra in extra_folders(export):
        shutil.copytree(extra, tmp / extra.name)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    curve = plot_losses(metrics, tmp / "loss.png")
    data = data_statistics(Path(raw.get("data", {}).get("clean_dir", "data/clean")))
    tok_path = Path(raw.get("tokenizer", {}).get("dir", "")) / "stats.json"
    tok_stats = json.loads(tok_path.read_text(encoding="utf-8")) if tok_path.is_file() else None
    # MLM is scored on the run's own held-out split unless --eval-data says otherwise.
    defaults = {"mlm": str(Path(data["clean_dir"]) / "valid")} if (Path(data["clean_dir"]) / "valid").is_dir() else {}
    evals = run_evaluations(tmp, model, skip_eval, eval_data, list(eval_options), eval_timeout, defaults=defaults)
    card = model_card(model, raw, folders, curve, data, tok_stats, evals, export_info, metrics)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    (tmp / "release.json").write_text(json.dumps({"model": model, "export": export_info, "folders": folders,
                                                  "evaluation": evals}, ensure_ascii=False, indent=1),
                                      encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return {"out": str(out), "folders": folders, "evaluation": evals, "export": export_info}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.release", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="", help="run directory (default runs/MODEL)")
    parser.add_argument("--model", default="", help="expected model name (checked against RUN/config.yaml)")
    parser.add_argument("--out", default="", help="release folder (default RUN/release)")
    parser.add_argument("--skip-eval", action="store_true", help="do not run the downstream evaluation")
    parser.add_argument("--eval-data", default=None, help="--data for python -m pretrain.evaluate")
    parser.add_argument("--eval-option", action="append", default=[], metavar="KEY=VALUE",
                        help="-o option for python -m pretrain.evaluate (repeatable)")
    parser.add_argument("--eval-timeout", type=int, default=3600, help="seconds per evaluation task")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if not args.run and not args.model:
        print("error: RUN or MODEL is required, e.g. make release MODEL=t5-pegasus", file=sys.stderr)
        return 2
    run_dir = args.run or f"runs/{args.model}"
    try:
        result = release(run_dir, args.model or None, args.out or None, args.skip_eval, args.eval_data,
                         args.eval_option, args.eval_timeout)
    except (ReleaseError, ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, info in result["folders"].items():
        print(f"{Path(result['out']) / name}: {info['architecture']} via {info['auto_class']}, "
              f"{info['parameters']:,} parameters, verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
