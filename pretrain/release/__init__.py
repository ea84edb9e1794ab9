"""A verified Hugging Face release of a training run, with a model card (``make release``).

  python -m pretrain.release --run runs/t5-pegasus [--model t5-pegasus] [--out DIR]
                             [--skip-eval] [--eval-data PATH] [--eval-option KEY=VALUE ...]
  python -m pretrain.release --verify DIR      # every file against its recorded sha256

Writes ``RUN/release/`` (and ``RUN/release/generator/`` for ELECTRA): safetensors
weights, config, generation config (encoder-decoders), tokenizer files, ``loss.png``,
``README.md`` (the model card: data and tokenizer statistics, hyperparameters, loss
curve, evaluation results, intended use, how to load, checksums) and ``release.json``
(sha256 of every file). Modules: ``verify`` (export, reload checks, checksums),
``card`` (the model card), ``evaluations`` (the objective's downstream tasks).

Everything is derived from the folders' ``config.json`` and the objective's spec, so any
objective's export works. Before writing, ``RUN/export`` is checked against the latest
checkpoint and rebuilt from it when missing, stale or holding ZeRO-3 placeholders.
After writing, every folder is reloaded through its ``transformers`` Auto class and
must give logits equal to ``RUN/export``'s on a fixed Chinese input, and its weights
must equal the checkpoint's. The release is built beside ``--out`` and renamed into
place; an existing ``--out`` is replaced only if it is a previous release.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from pretrain.config import load_run_config
from pretrain.export import checkpoint_state, replace_folder
from pretrain.release.card import data_statistics, model_card, plot_losses
from pretrain.release.evaluations import run_evaluations
from pretrain.release.verify import (MANIFEST, ReleaseError, copy_folder, ensure_export, ensure_generation_config,
                                     extra_folders, file_checksums, model_folders, verify, verify_release)

log = logging.getLogger("pretrain")
__all__ = ["release", "verify_release", "run_evaluations", "ReleaseError"]


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _replaceable(out: Path) -> None:
    """Refuse to replace a folder that is not a previous release of this project."""
    if not out.exists():
        return
    try:
        ours = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("zh_pretrain_release") is True
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise ReleaseError(f"{out} exists and is not a release written by this project (no {MANIFEST} marker); "
                           f"choose another --out or move it away")


def release(run_dir: str | Path, model: str | None = None, out: str | Path | None = None, skip_eval: bool = False,
            eval_data: str | None = None, eval_options: list[str] = (), eval_timeout: int = 3600) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ReleaseError(f"{run_dir / 'config.yaml'}: not found; is {run_dir} a training run (make pretrain)?")
    cfg = load_run_config(run_dir)
    if model and cfg.model != model:
        raise ReleaseError(f"{run_dir}: run is MODEL={cfg.model}, not {model}")
    spec = cfg.objective_class.spec
    raw = cfg.to_dict()
    out = Path(out) if out else run_dir / "release"
    _replaceable(out)
    export, export_info = ensure_export(run_dir, cfg)
    ckpt_state = None
    if export_info["checkpoint"]:
        ckpt_state = checkpoint_state(run_dir / "checkpoints", export_info["checkpoint"], cfg.train.zero_stage,
                                      cfg.train.precision)
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
    data = data_statistics(Path(cfg.data.clean_dir))
    tok_path = Path(cfg.tokenizer.dir) / "stats.json"
    tok_stats = json.loads(tok_path.read_text(encoding="utf-8")) if tok_path.is_file() else None
    # MLM is scored on the run's own held-out split unless --eval-data says otherwise.
    defaults = {"mlm": str(Path(data["clean_dir"]) / "valid")} if (Path(data["clean_dir"]) / "valid").is_dir() else {}
    evals = run_evaluations(tmp, spec.eval_tasks, skip_eval, eval_data, list(eval_options), eval_timeout,
                            defaults=defaults)
    init_path = run_dir / "init_report.json"
    init = json.loads(init_path.read_text(encoding="utf-8")) if init_path.is_file() else None
    card = model_card(cfg.model, spec.intended_use, raw, folders, curve, data, tok_stats, evals, export_info, metrics,
                      file_checksums(tmp), init)
    from pretrain.evaluation.card import card_section
    card += "\n" + card_section(run_dir)           # RUN/eval/*.json (make eval) beside the published rows
    (tmp / "README.md").write_text(card, encoding="utf-8")
    (tmp / MANIFEST).write_text(json.dumps({"zh_pretrain_release": True, "model": cfg.model, "export": export_info,
                                            "folders": folders, "evaluation": evals, "files": file_checksums(tmp)},
                                           ensure_ascii=False, indent=1), encoding="utf-8")
    replace_folder(tmp, out)
    return {"out": str(out), "folders": folders, "evaluation": evals, "export": export_info}
