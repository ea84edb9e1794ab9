"""Typed, validated run configuration.

A model's YAML file (``configs/<model>.yaml``) holds shared settings plus size
presets (``sizes: {tiny: {...}, small: {...}, base: {...}}``). Loading merges the
chosen preset over the shared settings, applies ``key=value`` command-line
overrides (dotted keys), and validates the result against the dataclasses
below. Any unknown key, wrong type or missing required key stops with one line
that names the file and the key: a typo must never be silently ignored.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

MODELS = ("t5-pegasus", "electra", "mlm-proposal", "roformer-sim")
REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A configuration problem; its message is one line naming file and key."""


@dataclass
class DataConfig:
    corpus: str = "data/sample/*.jsonl"     # glob, list-free for CLI friendliness, or hf:NAME
    clean_dir: str = "data/clean"           # output of the Beam cleaning pipeline
    pairs_dir: str = ""                     # objective-specific derived data (e.g. pseudo-summary pairs)
    num_shards: int = 0                     # 0 = let the pipeline decide
    valid_fraction: float = 0.02
    workers: int = 1                        # Beam DirectRunner worker processes
    pipeline_config: str = "configs/pipeline.yaml"


@dataclass
class TokenizerConfig:
    dir: str = "artifacts/tokenizer"
    vocab_size: int = 50000
    algo: str = "wordpiece"                 # wordpiece | sentencepiece
    min_char_freq: int = 1
    min_word_freq: int = 2


@dataclass
class PairsConfig:
    """T5-PEGASUS pseudo-summary construction (pipeline.pairs)."""
    ratio: float = 0.25
    max_source_chars: int = 1024
    max_target_chars: int = 256
    min_sentences: int = 4


@dataclass
class ModelConfig:
    """Architecture hyper-parameters; which fields matter depends on the family."""
    d_model: int = 512
    d_ff: int = 1024
    num_layers: int = 8
    num_decoder_layers: int = 8
    num_heads: int = 6
    d_kv: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.0               # T5 v1.1 / mT5: no dropout in pretraining
    feed_forward_proj: str = "gated-gelu"
    initializer_factor: float = 1.0


@dataclass
class TrainConfig:
    steps: int = 1000
    micro_batch_size: int = 8               # per process
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.0
    warmup_steps: int = 100
    schedule: str = "inverse_sqrt"          # inverse_sqrt | linear | cosine | constant
    optimizer: str = "adamw"                # adamw | adafactor
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "fp32"                 # fp32 | bf16 | fp16 | amp-bf16 (fp32 weights, bf16 autocast)
    zero_stage: int = 2
    offload: bool = False                   # ZeRO CPU offload of optimizer state
    seed: int = 42
    max_source_len: int = 256
    max_target_len: int = 64
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    eval_generate: int = 16                 # held-out pairs decoded greedily for ROUGE
    save_every: int = 200
    keep_last: int = 3
    max_bad_steps: int = 5                  # consecutive non-finite losses before stopping
    compile: bool = False                   # torch.compile the model (inductor, dynamic shapes): ~1-2 min at start
    num_threads: int = 0                    # torch intra-op threads per process; 0 = cores / processes
    trace_samples: bool = False             # write the ids each rank trains on per step (RUN/trace/)
    peak_tflops: float = 0.0                # per-device peak for the MFU estimate; 0 = known GPUs only


@dataclass
class RunConfig:
    model: str = "t5-pegasus"
    size: str = "tiny"
    run_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    arch: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Objective-specific settings (ELECTRA's generator size, loss weights, ...); each
    # objective validates its own section with `parse_section`.
    objective: dict = field(default_factory=dict)
    # Progressive growth schedule, e.g. [{at_step: 2000, layers: 12}]; validated by pretrain.growth.
    growth: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "model": MODELS,
    "tokenizer.algo": ("wordpiece", "sentencepiece"),
    "train.schedule": ("inverse_sqrt", "linear", "cosine", "constant"),
    "train.optimizer": ("adamw", "adafactor"),
    "train.precision": ("fp32", "bf16", "fp16", "amp-bf16"),
    "train.zero_stage": (0, 1, 2, 3),
    "arch.feed_forward_proj": ("gated-gelu", "relu", "gelu", "gated-silu"),
}
POSITIVE = {"train.steps", "train.micro_batch_size", "train.grad_accum", "train.log_every",
            "train.save_every", "train.eval_every", "train.keep_last", "train.max_source_len",
            "train.max_target_len", "arch.d_model", "arch.d_ff", "arch.num_heads", "arch.d_kv",
            "tokenizer.vocab_size", "train.max_bad_steps"}
# Keys every model file must set explicitly (no silent defaults for what defines a run).
REQUIRED = ("model", "sizes", "train.steps", "train.lr")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp, where: str, key: str) -> Any:
    """Return value coerced to tp (int→float only) or raise a one-line ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_value(value, args[0], where, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it is.
        try:
            return float(value)
        except ValueError:
            pass
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: key '{key}' must be a mapping, got {type(value).__name__} {value!r}")
        return value
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: key '{key}' must be a list, got {type(value).__name__} {value!r}")
        return value
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool:
            raise ConfigError(f"{where}: key '{key}' must be {tp.__name__}, got bool {value!r}")
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: key '{key}' must be {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: key '{key}' has unsupported type {_type_name(tp)}")


def _build(cls, raw: dict, where: str, prefix: str = ""):
    """Instantiate dataclass cls from raw, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: key '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{full}' (valid: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, where, f"{full}.")
        else:
            kwargs[key] = _check_value(value, tp, where, full)
    return cls(**kwargs)


def parse_section(cls, raw: dict, where: str = "config", prefix: str = "objective."):
    """Validate an objective's own section against its dataclass (same one-line errors)."""
    return _build(cls, raw or {}, where, prefix)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _get(d: dict, dotted: str):
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def parse_overrides(items: list[str]) -> dict:
    """['train.steps=50', 'arch.d_model=64'] -> nested dict; values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"command line: override '{item}' must look like key=value")
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        cur = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
    return out


def config_path(model: str) -> Path:
    return CONFIG_DIR / f"{model}.yaml"


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def load_config(path: str | Path, overrides: list[str] | dict | None = None,
                size: str | None = None) -> RunConfig:
    """Load a model YAML, merge the size preset and overrides, validate, return RunConfig."""
    path = Path(path)
    raw = load_raw(path)
    where = str(path)
    for key in REQUIRED:
        if _get(raw, key) is None:
            raise ConfigError(f"{where}: missing required key '{key}'")
    sizes = raw.pop("sizes")
    if not isinstance(sizes, dict) or not sizes:
        raise ConfigError(f"{where}: key 'sizes' must be a non-empty mapping of presets")
    over = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides or []))
    chosen = size or over.pop("size", None) or raw.get("size", "tiny")
    over.pop("size", None)
    if chosen not in sizes:
        raise ConfigError(f"{where}: unknown SIZE '{chosen}' (valid: {'|'.join(sizes)})")
    # Validate the shared part and every preset, so a typo in an unused preset is caught too.
    _build(RunConfig, raw, where)
    for name, preset in sizes.items():
        if not isinstance(preset, dict):
            raise ConfigError(f"{where}: key 'sizes.{name}' must be a mapping")
        _build(RunConfig, preset, f"{where} (sizes.{name})")
    merged = _deep_merge(raw, sizes[chosen])
    merged["size"] = chosen
    cfg = _build(RunConfig, merged, where)
    if over:
        cfg = _build(RunConfig, _deep_merge(merged, over), "command line")
    _validate_values(cfg, where)
    if not cfg.run_dir:
        cfg.run_dir = f"runs/{cfg.model}"
    return cfg


def _validate_values(cfg: RunConfig, where: str) -> None:
    flat = dataclasses.asdict(cfg)
    for key, allowed in CHOICES.items():
        value = _get(flat, key)
        if value not in allowed:
            raise ConfigError(f"{where}: key '{key}' is {value!r}; valid: {', '.join(map(str, allowed))}")
    for key in POSITIVE:
        if _get(flat, key) <= 0:
            raise ConfigError(f"{where}: key '{key}' must be > 0, got {_get(flat, key)!r}")
    if cfg.train.offload and cfg.train.zero_stage == 0:
        raise ConfigError(f"{where}: key 'train.offload' needs train.zero_stage >= 1")
    if cfg.arch.d_model != cfg.arch.num_heads * cfg.arch.d_kv and cfg.model != "t5-pegasus":
        raise ConfigError(f"{where}: key 'arch.d_kv' must equal d_model / num_heads")


def preset_names(path: str | Path) -> list[str]:
    raw = load_raw(path)
    sizes = raw.get("sizes") or {}
    return list(sizes) if isinstance(sizes, dict) else []


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False), encoding="utf-8")
