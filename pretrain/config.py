"""Typed, validated run configuration.

A model's YAML file (``configs/<model>.yaml``; the file name is the ``MODEL=`` name)
holds shared settings plus size presets (``sizes: {tiny: {...}, small: {...}}``). Loading
merges the chosen preset over the shared settings, applies ``key=value`` command-line
overrides (dotted keys), and validates the result against the dataclasses below and the
objective's own spec (``objective.name`` picks it; its ``arch`` family and ``objective:``
options are dataclasses too). Any unknown key, wrong type or bad value stops with one
line that names the file and the key, before any data stage runs.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.pair_config import PairConfig
from pretrain.init import InitConfig, apply_to_config
from tokenizer.options import VocabOptions
from pipeline.typed_config import (ConfigError, InvalidValue, build, check_types, deep_merge,  # noqa: F401
                                   get_dotted, load_yaml, parse_overrides)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _config_dir() -> Path:
    """configs/ of the checkout, or the copy installed as package data (non-editable installs)."""
    local = REPO_ROOT / "configs"
    if local.is_dir():
        return local
    from importlib.resources import files
    return Path(str(files("pretrain") / "configs"))


CONFIG_DIR = _config_dir()


@dataclass
class MixSource:
    """One entry of ``data.mix``: a prepared corpus (what ``make data`` writes) and its sampling weight."""
    path: str = ""                          # folder with manifest.json and train/valid shards
    weight: float = 1.0
    name: str = ""                          # its name in metrics.jsonl (default: the folder's name)
    pairs_dir: str = ""                     # its objective data / token shards; "" = content-addressed
    tokens_dir: str = ""                    #   stage folders, built by the launcher

    def __post_init__(self):
        if not self.path:
            raise InvalidValue("path", "is required (a prepared corpus folder)")
        if not self.weight > 0:
            raise InvalidValue("weight", f"must be > 0, got {self.weight}")


@dataclass
class DataConfig:
    corpus: str = "data/sample/*.jsonl"     # glob(s), comma-separated, a folder, or hf:NAME
    clean_dir: str = ""                     # cleaned corpus; "" = <stages_dir>/clean-<fingerprint of its inputs>
    pairs_dir: str = ""                     # pseudo-summary pairs; "" = <stages_dir>/pairs-<fingerprint>
    stages_dir: str = "data/stages"         # where content-addressed data stages go
    num_shards: int = 0                     # 0 = let the pipeline decide
    valid_fraction: float = 0.02
    workers: int = 1                        # Beam DirectRunner worker processes
    pipeline_config: str = "configs/pipeline.yaml"
    pipeline_set: list[str] = field(default_factory=list)   # KEY=VALUE overrides of pipeline_config for the
                                            # clean stage (make pretrain SET='filters.min_chars=2 ...')
    verify: Literal["full", "size", "off"] = "full"   # shard check at run start: sha256 + size (one process
                                            # per node), size only, or existence only (huge corpora)
    tokens: bool = True                     # pre-tokenized, memory-mapped token shards (a stage); false:
                                            # tokenize each batch in the trainer (the tiny presets)
    tokens_dir: str = ""                    # "" = data/stages/tokens-<fingerprint of its inputs>
    loader_workers: int = -1                # background processes reading token batches; 0 = in the trainer;
                                            # -1 = 2 on a GPU, 0 on CPU (bench/data_bench.py, BENCHMARKS.md)
    prefetch: int = 4                       # batches each of them prepares ahead
    length_group: int = 0                   # sort each shard's shuffled samples by length in windows of
                                            # this many, so a micro-batch pads little (0 = off; pretrain.data)
    mix: list[MixSource] = field(default_factory=list)   # [{path, weight}]: train on these corpora, by weight
    text_field: str = ""                    # how to read the corpus when its layout cannot be inferred
    format: str = ""                        #   (make pretrain TEXT_FIELD= FORMAT= ENCODING=; "" = detect)
    encoding: str = ""

    def __post_init__(self):
        if self.loader_workers < -1:
            raise InvalidValue("loader_workers", f"must be >= 0, or -1 (auto), got {self.loader_workers}")
        if self.prefetch < 1:
            raise InvalidValue("prefetch", f"must be >= 1, got {self.prefetch}")
        if self.length_group < 0:
            raise InvalidValue("length_group", f"must be >= 0 (0 = off), got {self.length_group}")


@dataclass
class TokenizerConfig(VocabOptions):
    """The vocabulary options (tokenizer/options.py) plus where the folder goes and what it is."""
    dir: str = ""                           # "" = <root>/tokenizer-<fingerprint of its inputs>
    root: str = "artifacts"                 # where content-addressed tokenizers go
    # project: a word+character vocabulary built from the corpus; or a released vocabulary
    # (vocab_file) tokenized exactly as its model was trained (tokenizer/released.py)
    recipe: Literal["project", "t5-pegasus", "wobert", "bert-chinese"] = "project"
    vocab_file: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.recipe != "project" and not self.vocab_file:
            raise InvalidValue("vocab_file", f"is required with tokenizer.recipe={self.recipe}")


@dataclass
class TrainConfig:
    steps: int = 1000
    micro_batch_size: int = 8               # per process
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.0
    warmup_steps: int = 100
    schedule: Literal["inverse_sqrt", "linear", "cosine", "constant"] = "inverse_sqrt"
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: Literal["fp32", "bf16", "fp16", "amp-bf16"] = "fp32"   # amp-bf16: fp32 weights, bf16 autocast
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload: bool = False                   # ZeRO CPU offload of optimizer state
    seed: int = 42
    max_source_len: int = 256
    max_target_len: int = 64
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    eval_generate: int = 16                 # held-out records for the objective's own evaluate()
    save_every: int = 200
    keep_last: int = 3
    max_bad_steps: int = 5                  # consecutive non-finite losses before stopping
    finite_check: Literal["auto", "step", "log"] = "auto"   # where non-finite losses/gradients are caught:
                                            # "step" reads the loss and norm on the host every micro-batch/step
                                            # and drops a bad micro-batch; "log" keeps the checks on the device
                                            # (a bad step is skipped, counted at the next log step: no host
                                            # sync outside logging; ZeRO-0); "auto" = "log" on CUDA at ZeRO-0
    packing: bool = True                    # several sequences per row, none attending another (pretrain.packing)
    compile: bool = False                   # torch.compile the transformer bodies: ~1-2 min at start
    compile_backend: str = "inductor"       # torch.compile backend (inductor; aot_eager traces without code generation)
    num_threads: int = 0                    # torch intra-op threads per process; 0 = cores / processes
    fused_lm_loss: bool = True              # not compiled: T5's LM head and cross-entropy in one step, labelled
                                            # positions only (pretrain.lm_loss); false = the model's own loss
    cpu_dropout: bool = True                # CPU, not compiled: dropout masks from numpy's SFC64, ~10x cheaper than
                                            # torch's bernoulli_, same distribution (pretrain.dropout); false = torch's
    fused_gelu: bool = True                 # gelu_new (T5's FFN) as torch's one tanh-GELU kernel, same formula
                                            # rounded once (pretrain.models.fuse_gelu); false = the eight-op original
    fused_rms_norm: bool = True             # not compiled: T5's layer norm (RMS) in one autograd node, ten passes
                                            # instead of ~twenty (pretrain.models.fuse_rms_norm); false = transformers'
    relative_bias_by_offset: bool = True    # T5's position bias from its q+k-1 offsets, not its q*k pairs: same
                                            # values (pretrain.models.relative_bias_by_offset); false = transformers'
    flatten_packed: bool = True             # CPU training with cpu_dropout, T5: packed rows laid end to end without
                                            # their padding for the linear layers, attention still on the rows
                                            # (pretrain.packing.flatten_rows); false = every layer on the padded rows
    cpu_heap_reuse: bool = True             # CPU: freed tensor memory is reused, not returned to the OS, up to a bound
                                            # (pretrain.engine.reuse_freed_memory, HeapCap); false = glibc's default
    trace_samples: bool = False             # write the ids each rank trains on per step (RUN/trace/)
    peak_tflops: float = 0.0                # per-device peak for the MFU estimate; 0 = known GPUs, measured on CPU
    profile_steps: int = 0                  # steps whose phase times go to RUN/profile.json (pretrain.phases); 0 = off
    activation_checkpointing: bool = False  # recompute each layer in backward: memory for time (base sizes)
    probe_every: int = 0                    # every N steps a linear probe of the encoder on probe_task's dev set
    probe_task: str = "thucnews_titles"     #   (pretrain/evaluation/probe.py); 0 = off

    POSITIVE = ("steps", "micro_batch_size", "grad_accum", "log_every", "save_every", "eval_every", "keep_last",
                "max_source_len", "max_target_len", "max_bad_steps")

    def __post_init__(self):
        for key in self.POSITIVE:
            if getattr(self, key) <= 0:
                raise InvalidValue(key, f"must be > 0, got {getattr(self, key)!r}")
        if self.offload and self.zero_stage == 0:
            raise InvalidValue("offload", "needs train.zero_stage >= 1")
        if self.compile and self.compile_backend != "inductor":
            import torch._dynamo
            known = torch._dynamo.list_backends(exclude_tags=())
            if self.compile_backend not in known:
                raise InvalidValue("compile_backend", f"'{self.compile_backend}' is not a torch.compile backend "
                                                      f"(known: {', '.join(known)})")


@dataclass
class RunConfig:
    model: str = ""                         # the MODEL name (the YAML's file name)
    size: str = "tiny"
    run_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    arch: Any = None                        # the objective's architecture family (pretrain.models)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: Any = None                   # the objective's options (its spec.options dataclass)
    init: InitConfig = field(default_factory=InitConfig)   # start from an existing checkpoint (INIT=)
    # Progressive growth schedule, e.g. [{at_step: 2000, layers: 12}]; validated by pretrain.growth.
    growth: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def objective_class(self):
        from pretrain.objectives import objective_class
        return objective_class(self.objective.name)


# Keys every model file must set explicitly (no silent defaults for what defines a run).
REQUIRED = ("model", "sizes", "train.steps", "train.lr")


def models() -> list[str]:
    """The MODEL names: the model YAML files in configs/ (every YAML except pipeline.yaml)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "pipeline")


def config_path(model: str) -> Path:
    return CONFIG_DIR / f"{model}.yaml"


def config_from_dict(raw: dict, where: str, explicit_size: bool = True, apply_init: bool = True) -> RunConfig:
    """A RunConfig from a complete (preset-merged) mapping: shared sections, the objective's
    ``arch`` family and options, then the objective's cross-section checks."""
    from pretrain.objectives import objective_class

    raw = copy.deepcopy(raw)
    opts = raw.get("objective", {}) or {}
    if not isinstance(opts, dict):
        raise ConfigError(f"{where}: key 'objective' must be a mapping")
    try:
        cls = objective_class(opts.get("name") or raw.get("model", ""))
    except ConfigError as exc:
        raise ConfigError(f"{where}: key 'objective.name': {exc}") from None
    if apply_init:
        raw = apply_to_config(raw, cls, explicit_size, where)     # INIT=: the checkpoint's dimensions
    arch, opts = raw.pop("arch", {}) or {}, raw.pop("objective", {}) or {}
    cfg = build(RunConfig, raw, where)
    opts.setdefault("name", cfg.model)
    cfg.arch = build(cls.spec.arch, arch, where, "arch.")
    cfg.objective = build(cls.spec.options, opts, where, "objective.")
    cls.check(cfg, where)
    from pretrain.growth import schedule
    schedule(cfg)                           # growth entries are validated at load too
    return cfg


def load_config(path: str | Path, overrides: list[str] | dict | None = None, size: str | None = None) -> RunConfig:
    """Load a model YAML, merge the size preset and overrides, validate, return RunConfig."""
    path = Path(path)
    raw = load_yaml(path)
    where = str(path)
    for key in REQUIRED:
        if get_dotted(raw, key) is None:
            raise ConfigError(f"{where}: missing required key '{key}'")
    sizes = raw.pop("sizes")
    if not isinstance(sizes, dict) or not sizes:
        raise ConfigError(f"{where}: key 'sizes' must be a non-empty mapping of presets")
    over = copy.deepcopy(overrides) if isinstance(overrides, dict) else parse_overrides(list(overrides or []))
    explicit = bool(size or over.get("size"))
    chosen = size or over.pop("size", None) or raw.get("size", "tiny")
    over.pop("size", None)
    if chosen not in sizes:
        raise ConfigError(f"{where}: unknown SIZE '{chosen}' (valid: {'|'.join(sizes)})")
    # The shared part's keys and types (a typo there must not hide behind the presets), then every
    # preset merged over it, so a typo in an unused preset is caught too.
    _check_shared(raw, where)
    for name, preset in sizes.items():
        if not isinstance(preset, dict):
            raise ConfigError(f"{where}: key 'sizes.{name}' must be a mapping")
        if name != chosen:
            config_from_dict({**deep_merge(raw, preset), "size": name}, f"{where} (sizes.{name})")
    merged = {**deep_merge(raw, sizes[chosen]), "size": chosen}
    cfg = config_from_dict(merged, where, explicit)
    if over:
        cfg = config_from_dict(deep_merge(merged, over), "command line", explicit)
    if not cfg.run_dir:
        cfg.run_dir = f"runs/{cfg.model}"
    return cfg


def _check_shared(raw: dict, where: str) -> None:
    from pretrain.objectives import objective_class

    shared = {k: v for k, v in raw.items() if k not in ("arch", "objective")}
    check_types(RunConfig, shared, where)
    opts = dict(raw.get("objective") or {})
    try:
        cls = objective_class(opts.get("name") or raw.get("model", ""))
    except ConfigError:
        return                            # reported with the merged config
    check_types(cls.spec.arch, raw.get("arch"), where, "arch.")
    check_types(cls.spec.options, opts, where, "objective.")


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig a run was trained with (RUN/config.yaml, written by the trainer)."""
    path = Path(run_dir) / "config.yaml"
    return config_from_dict(load_yaml(path), str(path), apply_init=False)   # saved: dimensions already applied


def preset_names(path: str | Path) -> list[str]:
    sizes = load_yaml(path).get("sizes") or {}
    return list(sizes) if isinstance(sizes, dict) else []


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False), encoding="utf-8")
