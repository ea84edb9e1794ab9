"""Distributed setup and the DeepSpeed engine: config, optimizer, learning-rate schedule.

The ZeRO stage's JSON (``configs/deepspeed/zero<N>.json``) holds what is
specific to DeepSpeed; values marked ``"auto"`` are filled from the model YAML
so batch size, precision and clipping are stated once.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket

import torch
import torch.distributed as dist

from pretrain.config import CONFIG_DIR, ConfigError, RunConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_backend(cuda: bool) -> str:
    """gloo on CPU; on GPUs NCCL for CUDA tensors plus gloo for the trainer's small CPU tensors
    (finite and preemption flags, logged sums), which NCCL alone refuses."""
    return "cpu:gloo,cuda:nccl" if cuda else "gloo"


def _glibc():
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def reuse_freed_memory() -> bool:
    """Keep every freed block in the process heap for the next tensor (glibc ``mallopt``); False elsewhere.

    glibc serves each block over 32 MB (logits over a 50k vocabulary, attention scores, their
    gradients) with a fresh ``mmap`` and unmaps it when freed, so every step pays the page faults of
    zeroing that memory again: 39 % of a plain T5 ``small`` step (50k vocabulary) on a 2-core VM.
    With mmap and trimming off, a step's memory is mapped once and reused, as jemalloc or tcmalloc
    would. The price: memory freed after the peak stays with the process, and when batch shapes vary
    the free holes can fragment and pile up (a RoFormer-Sim run once reached 24 GB and was killed),
    so the trainer bounds them with ``HeapCap``.
    """
    libc = _glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_max = -1, -4                      # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def _resident_anonymous() -> int | None:
    """The process's resident anonymous memory in bytes (``RssAnon``, Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class HeapCap:
    """Bounds the free memory that ``reuse_freed_memory`` keeps resident in the heap.

    After each optimizer step it measures the resident memory the heap holds but does not use:
    resident anonymous memory (``RssAnon``) minus glibc's in-use total (``mallinfo2``). Over the
    first ``warmup`` steps that is a step's own temporaries (plus the interpreter's own arenas);
    later, when it passes ``factor`` times the largest seen then (at least ``floor`` bytes), holes
    are piling up, and ``malloc_trim`` hands their pages back to the OS (the address range stays,
    so a step that reuses one faults it in once). A trim lowers the resident figure, so the next
    one waits until holes pile up again. Where the trim cannot bring it under the bar, the bar
    moves up to it. (Measured on glibc's free total instead, which a trim does not lower, a run
    whose packed batches fragment the heap by a few MB a step trimmed at every step from step
    ~110 on, and lost a quarter of its speed.)
    """

    def __init__(self, warmup: int = 20, factor: float = 2.0, floor: int = 1 << 30):
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                      "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

        self.libc = _glibc()
        if self.libc is not None and hasattr(self.libc, "mallinfo2"):
            self.libc.mallinfo2.restype = MallInfo2
        else:
            self.libc = None                                   # not glibc, or glibc < 2.33
        self.warmup, self.factor, self.floor = warmup, factor, floor
        self.steps, self.baseline, self.trims, self.free, self.used, self.idle, self.trimmed = 0, 0, 0, 0, 0, 0, 0

    def _measure(self) -> int:
        info = self.libc.mallinfo2()
        self.free, self.used = info.fordblks, info.uordblks
        resident = _resident_anonymous()
        self.idle = max(resident - self.used, 0) if resident is not None else self.free
        return self.idle

    def after_step(self) -> bool:
        """True when this call trimmed the heap."""
        if self.libc is None:
            return False
        self.steps += 1
        idle = self._measure()
        if self.steps <= self.warmup:
            self.baseline = max(self.baseline, idle)
            return False
        bar = max(self.floor, self.factor * self.baseline)
        if idle <= bar:
            return False
        self.libc.malloc_trim(0)
        self.trims += 1
        self.trimmed = idle              # what piled up, for the warning
        after = self._measure()
        if after > bar:                  # what is left is not free pages: the run's memory grew
            self.baseline = after
        return True

    def stats(self) -> dict:
        if self.libc is None:
            return {}
        return {"heap_used_gb": self.used / 2**30, "heap_free_gb": self.free / 2**30,
                "heap_idle_gb": self.idle / 2**30, "heap_trims": self.trims}


def init_distributed() -> tuple[int, int, int]:
    """Start torch.distributed through DeepSpeed (gloo on CPU, nccl on GPU); return rank, world, local rank.

    A plain ``python -m pretrain.train`` is a world of one; ``torchrun``,
    ``deepspeed`` and ``srun`` set the usual environment variables.
    """
    if "SLURM_PROCID" in os.environ and "RANK" not in os.environ:
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
    import deepspeed

    deepspeed.init_distributed(dist_backend=dist_backend(torch.cuda.is_available()), verbose=False)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return rank, world, local


def check_precision(cfg: RunConfig) -> None:
    """Refuse a precision this machine's accelerator lacks, before any data stage runs
    (DeepSpeed's CPU accelerator has bf16 but no fp16; its own error is a rank traceback)."""
    if cfg.train.precision != "fp16":
        return
    from deepspeed.accelerator import get_accelerator
    if not get_accelerator().is_fp16_supported():
        raise ConfigError(f"train.precision=fp16 is not supported on this machine's accelerator "
                          f"({get_accelerator().device_name()}); use bf16 or amp-bf16")


def deepspeed_config(cfg: RunConfig) -> dict:
    t = cfg.train
    path = CONFIG_DIR / "deepspeed" / f"zero{t.zero_stage}.json"
    ds = json.loads(path.read_text(encoding="utf-8"))
    ds.pop("_comment", None)
    fill = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": t.grad_clip,
    }
    for key, value in fill.items():
        if ds.get(key) == "auto":
            ds[key] = value
    if clips_itself(cfg):
        ds["gradient_clipping"] = 0.0
    ds["bf16"]["enabled"] = t.precision == "bf16" and not own_master_weights(cfg)
    ds["fp16"]["enabled"] = t.precision == "fp16"
    if t.precision == "amp-bf16":
        # fp32 weights, gradients and optimizer; matmuls run in bf16 under torch.autocast
        # inside engine.forward. About as fast as DeepSpeed's bf16 mode on CPU, exports the
        # weights as trained, and is what train.compile pairs with (bench/train_bench.py).
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    if t.offload:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
        # Our optimizer (torch AdamW / Adafactor) steps on the CPU copy; DeepSpeed's own
        # CPU Adam would need a ~140 s JIT build on every fresh machine.
        ds["zero_force_ds_cpu_optimizer"] = False
    return ds


def clips_itself(cfg: RunConfig) -> bool:
    """ZeRO-0 with torch's optimizer (fp32, amp-bf16; bf16 through ``pretrain.master_weights``): the
    trainer clips with the gradient norm it takes anyway for its finite check
    (``train.clip_and_norm``: one foreach pass), instead of DeepSpeed's per-parameter norm loop."""
    return cfg.train.zero_stage == 0 and cfg.train.precision in ("fp32", "amp-bf16", "bf16")


def flat_adafactor(cfg: RunConfig) -> str | None:
    """The warning for Adafactor under ZeRO-1/2/3, whose optimizers hand it flat partitions."""
    if cfg.train.optimizer != "adafactor" or cfg.train.zero_stage == 0:
        return None
    return (f"train.optimizer=adafactor at ZeRO-{cfg.train.zero_stage} steps DeepSpeed's flat partitions, not the "
            "weight matrices: second moments unfactored (Adam's memory) and update clipping per partition, so the "
            "update depends on the number of processes; the T5 recipe's factored Adafactor needs train.zero_stage=0")


def own_master_weights(cfg: RunConfig) -> bool:
    """ZeRO-0 in bf16: our fp32 master weights (``pretrain.master_weights``) instead of DeepSpeed's
    wrapper, whose extra passes made a T5-small norm + step 1.5x slower on CPU; ZeRO-1/2/3 keep DeepSpeed's."""
    return cfg.train.zero_stage == 0 and cfg.train.precision == "bf16"


def lr_lambda(cfg: RunConfig):
    """Multiplier on the peak lr at each optimizer step (warmup, then the chosen decay)."""
    t = cfg.train
    warm, total, floor = max(1, t.warmup_steps), max(1, t.steps), t.min_lr_ratio

    def f(step: int) -> float:
        step = step + 1
        if t.schedule == "inverse_sqrt":       # T5: 1/sqrt(max(step, warmup)), scaled to 1 at warmup
            return min(step / warm, 1.0) * math.sqrt(warm / max(step, warm))
        if step <= warm:
            return step / warm
        frac = min(1.0, (step - warm) / max(1, total - warm))
        if t.schedule == "linear":
            return floor + (1 - floor) * (1 - frac)
        if t.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))
        return 1.0

    return f


def parameter_groups(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Names of the parameters with and without weight decay, in the optimizer's order."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            ndim = len(getattr(p, "ds_shape", p.shape))        # ZeRO-3 keeps a partitioned model's shapes there
            (no_decay if ndim < 2 or "norm" in name.lower() else decay).append(name)
    return decay, no_decay


def optimizer_groups(cfg: RunConfig, model: torch.nn.Module) -> list[dict]:
    """The optimizer's two parameter groups: with ``train.weight_decay`` and without."""
    params = dict(model.named_parameters())
    decay, no_decay = ([params[n] for n in names] for names in parameter_groups(model))
    return [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = optimizer_groups(cfg, model)
    if own_master_weights(cfg):
        from pretrain.master_weights import MasterWeights, cast_parameters
        optimizer = MasterWeights(groups, lambda fp32_groups: base_optimizer(cfg, fp32_groups),
                                  names=[list(names) for names in parameter_groups(model)])
        cast_parameters(model, torch.bfloat16)     # after the masters took the fp32 values
        return optimizer
    return base_optimizer(cfg, groups)


def base_optimizer(cfg: RunConfig, groups: list[dict]) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adafactor":
        from pretrain.adafactor import Adafactor
        # T5 recipe: Adafactor with an external (inverse square root) schedule; HF's arithmetic,
        # fewer passes (pretrain.adafactor)
        return Adafactor(groups, lr=t.lr)
    # The fused kernel (CPU and CUDA) steps a 30M-parameter model ~15x faster than torch's
    # default per-parameter loop on CPU and ~5x faster than its foreach path.
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), eps=t.eps, fused=True)


def compile_transformers(model: torch.nn.Module, backend: str = "inductor") -> list[str]:
    """torch.compile (in place) the transformer body of every Hugging Face model inside ``model``.

    Objectives wrap their networks in code that samples masks or replacements (random draws,
    data-dependent shapes), which the compiler cannot trace; the transformer bodies are where
    the time goes. Compiling in place keeps parameter names, so checkpoints do not change.
    The first step compiles (about 1-2 min on a small CPU), eval mode once more; batch shapes
    vary, hence dynamic shapes. Returns the compiled modules' names.
    """
    names = []
    for name, module in hf_models(model):
        module.base_model.compile(dynamic=True, backend=backend)
        names.append(name)
    return names


def hf_models(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of the outermost Hugging Face models inside ``model`` (itself, if it is one)."""
    from transformers import PreTrainedModel

    found = []
    for name, module in model.named_modules():
        if isinstance(module, PreTrainedModel) and not any(n == "" or name.startswith(n + ".") for n, _ in found):
            found.append((name, module))
    return found


def checkpoint_activations(model: torch.nn.Module) -> None:
    """``train.activation_checkpointing``: every transformer layer recomputes its activations in the
    backward pass (non-reentrant), trading about a third more compute for activation memory that
    no longer grows with depth; what fits base sizes' batches on one device."""
    for _, module in hf_models(model):
        module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def cpu_attention(cfg: RunConfig) -> bool:
    """Whether ``build_engine`` gives the model the trainer's CPU dropout and attention
    (``pretrain.dropout.install``): ``train.cpu_dropout``, uncompiled (the compiled graph draws its
    own masks), not on CUDA (where torch's Philox is cheap and SDPA keeps its fused kernels)."""
    return cfg.train.cpu_dropout and not cfg.train.compile and not torch.cuda.is_available()


def build_engine(cfg: RunConfig, model: torch.nn.Module):
    import deepspeed

    if cfg.train.activation_checkpointing:
        checkpoint_activations(model)
    if cfg.train.fused_gelu:
        from pretrain.models import fuse_gelu
        fuse_gelu(model)
    if cfg.train.fused_rms_norm and not cfg.train.compile:     # inductor fuses transformers' own
        from pretrain.models import fuse_rms_norm
        fuse_rms_norm(model)
    if cfg.train.relative_bias_by_offset:
        from pretrain.models import relative_bias_by_offset
        relative_bias_by_offset(model)
    if cpu_attention(cfg):
        from pretrain.dropout import install
        install(model, flatten=cfg.train.flatten_packed)
    optimizer = build_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg))
    if cfg.train.zero_stage == 0 and engine.dp_world_size == 1:
        # One process has nothing to average, but DeepSpeed's ZeRO-0 backward would still flatten
        # every gradient into buckets, all-reduce them with itself and copy them back: 2-3 % of
        # a T5-small step on CPU (BENCHMARKS.md). The gradients are the same either way.
        engine.enable_backward_allreduce = False
    if own_master_weights(cfg):
        # bf16 at ZeRO-0: the masters' fp32 buffers are accumulated and averaged instead
        # (pretrain.master_weights), so DeepSpeed's all-reduce of the bf16 gradients is off
        if engine.dp_world_size != dist.get_world_size():
            raise ConfigError("train.precision=bf16 at ZeRO-0 averages over every process; "
                              "model or pipeline parallel groups are not supported")
        engine.enable_backward_allreduce = False
        optimizer.world = engine.dp_world_size
    if cfg.train.compile:
        names = compile_transformers(engine.module, cfg.train.compile_backend)
        logging.getLogger("pretrain").info("torch.compile: transformer bodies of %s (compiles on the first step)",
                                           ", ".join(n or "the model" for n in names))
    return engine, optimizer, scheduler
