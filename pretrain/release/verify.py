"""What makes a release trustworthy: every folder reloads through its Auto class with outputs equal to
RUN/export's and weights equal to the checkpoint's; every file's sha256 is recorded and checkable
(``python -m pretrain.release --verify DIR``). Also RUN/export itself, rebuilt from the latest
checkpoint when it is missing, stale or holds unconsolidated ZeRO-3 placeholders."""
from __future__ import annotations

import inspect
import json
import logging
import shutil
from pathlib import Path

import torch

from pipeline.corpus import sha256_file
from pretrain import checkpoint as ckpt

log = logging.getLogger("pretrain")
PROBE_TEXT = "今天上午，市图书馆举办了一场传统手工艺讲座，吸引了许多市民参加。"
# (Auto class, transformers mapping of model_type -> architecture) in the order they are tried.
AUTO_CLASSES = (("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
                ("AutoModelForPreTraining", "MODEL_FOR_PRETRAINING_MAPPING_NAMES"),
                ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
                ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
                ("AutoModel", "MODEL_MAPPING_NAMES"))
COPY_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".py")
SKIP_FILES = {"training_step.json"}
MANIFEST = "release.json"


class ReleaseError(RuntimeError):
    """A release that cannot be made or fails verification (one line)."""


# ---------------------------------------------------------------- folders
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


# ---------------------------------------------------------------- RUN/export
def export_is_current(export: Path, step: int | None) -> str | None:
    """None if RUN/export holds complete weights for `step`, else why not."""
    from pretrain.export import export_step

    if not (export / "config.json").is_file() or not weight_files(export):
        return "RUN/export has no weights"
    for name, folder in model_folders(export):
        empty = [k for k, v in load_weights(folder).items() if v.numel() == 0]
        if empty:
            return f"{folder}: {len(empty)} empty tensors (unconsolidated ZeRO-3 placeholders), e.g. {empty[0]}"
    done = export_step(export)
    if step is not None and done is not None and done != step:
        return f"RUN/export is from step {done}, latest checkpoint is {step}"
    return None


def ensure_export(run_dir: Path, cfg) -> tuple[Path, dict]:
    """RUN/export, rebuilt from the latest checkpoint when missing, stale or unconsolidated."""
    from pretrain.export import checkpoint_state, write_export

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
    state = checkpoint_state(run_dir / "checkpoints", latest[0], cfg.train.zero_stage, cfg.train.precision)
    write_export(cfg.objective_class(cfg), cfg, state, step, export)
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
    from transformers.utils import logging as hf_logging
    config = transformers.AutoConfig.from_pretrained(folder)
    auto = auto_class_name(config)
    # RoFormer-Sim's RoFormerForCausalLM keeps is_decoder=False on purpose (its encoder use is
    # bidirectional; UniLM passes its own mask), and transformers warns about that on every load.
    quiet = getattr(config, "model_type", "") == "roformer" and not getattr(config, "is_decoder", False)
    level = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity_error()
    try:
        model = getattr(transformers, auto).from_pretrained(folder)
    finally:
        hf_logging.set_verbosity(level)
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
    from tokenizer.loading import load_any_tokenizer
    model, auto = load_model(release)
    reference, _ = load_model(export)
    tokenizer = load_any_tokenizer(release)
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


# ---------------------------------------------------------------- checksums
def file_checksums(root: Path, skip: tuple[str, ...] = (MANIFEST,)) -> dict[str, dict]:
    """{relative path: {size, sha256}} of every file below root (release.json itself excluded)."""
    return {str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and str(p.relative_to(root)) not in skip}


def verify_release(root: str | Path) -> list[str]:
    """Problems of a release folder against its release.json checksums ([] = intact)."""
    root = Path(root)
    try:
        recorded = json.loads((root / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError) as exc:
        return [f"{root / MANIFEST}: no file checksums ({exc.__class__.__name__})"]
    problems = []
    present = file_checksums(root)
    for name, meta in recorded.items():
        got = present.get(name)
        if got is None:
            problems.append(f"{name}: missing")
        elif got != meta:
            problems.append(f"{name}: sha256 {got['sha256'][:12]}… != recorded {meta['sha256'][:12]}…")
    problems += [f"{name}: not in {MANIFEST}" for name in sorted(set(present) - set(recorded))]
    return problems
