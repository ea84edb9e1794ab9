"""Resume a checkpoint on another number of processes or another ZeRO stage.

The checkpoint is consolidated (every parameter's fp32 value and optimizer state, whole),
then written into the new engine, each rank taking its own fragments.

Why not DeepSpeed's universal checkpoint (``ds_to_universal`` + ``checkpoint.load_universal``):
it resumed a ZeRO-2 checkpoint on 2 -> 1 processes here, but loading a ZeRO-2 checkpoint into a
ZeRO-3 engine fails (``KeyError: 'optimizer_state_dict'``: stage 3 reads its own layout of
``optimizer_state.pt``), ZeRO-0 checkpoints have no partitions to convert, and a ZeRO-0 engine
loads no weights from a universal folder. Consolidation covers every pair of stages:

1. ``consolidate``: ZeRO-1/2/3 partitions are merged with the function ``zero_to_fp32`` uses for
   the fp32 weights (DeepSpeed's ``_zero2/_zero3_merge_trainable_params``), applied to each
   optimizer state tensor as well (``exp_avg``, ``exp_avg_sq``, ...: same flat layout as the
   weights); a ZeRO-0 checkpoint holds them whole, in the optimizer's parameter order.
2. ``load``: DeepSpeed's tensor-fragment API (``safe_set_full_fp32_param`` /
   ``safe_set_full_optimizer_state``) writes each rank's fragment (ZeRO-1/2/3); plain optimizers
   get their state whole, bf16 under ZeRO-0 its fp32 masters too (``pretrain.master_weights``;
   a checkpoint of DeepSpeed's own ZeRO-0 wrapper has the same layout). Step counts, the
   learning-rate schedule and the engine's counters follow. The fp16 loss scale restarts.

Not supported, refused with one line: Adafactor across ZeRO-0 and ZeRO-1/2/3 (a matrix's
factored row/column statistics vs the flat statistics of a partition).
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pretrain import checkpoint as ckpt

log = logging.getLogger("pretrain")


class ReshardError(RuntimeError):
    """A checkpoint that cannot be resumed on this layout (one line)."""


@dataclass
class Consolidated:
    params: dict[str, torch.Tensor]                       # name -> fp32 value
    states: dict[str, dict[str, torch.Tensor]]            # name -> {state key: tensor shaped like the param}
    scalars: dict = field(default_factory=dict)           # per-group optimizer scalars (step, ...), group 0's
    model_states: dict = field(default_factory=dict)      # the model-states file: schedule, counters, client state
    zero_stage: int = 0


def consolidate(folder: str | Path, model: torch.nn.Module) -> Consolidated:
    """Whole fp32 weights and optimizer states of a checkpoint folder (any ZeRO stage, any world size)."""
    from deepspeed.utils import zero_to_fp32 as z

    folder = Path(folder)
    optim_files = z.get_optim_files(str(folder)) if list(folder.glob("*_optim_states.pt")) else []
    model_files = sorted(folder.glob("*model_states.pt"))
    if not model_files:
        raise ReshardError(f"{folder}: no model-states file")
    states_file = ckpt.read(model_files[0])
    if not optim_files:
        return _consolidate_zero0(states_file, model)
    with contextlib.redirect_stdout(io.StringIO()), ckpt.safe_loads(model_files[0]):
        zero_states = z.parse_model_states([str(f) for f in model_files[:1]])
    shards = [ckpt.read(Path(f))["optimizer_state_dict"] for f in optim_files]
    stage, world = shards[0]["zero_stage"], shards[0]["partition_count"]
    world = max(world) if isinstance(world, list) else world
    flat_key, base_key = (("single_partition_of_fp32_groups", "base_optimizer_state") if stage <= 2
                          else ("fp32_flat_groups", "optimizer_state_dict"))

    def merge(flat_groups: list[list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        merged: dict = {}
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress lines
            if stage <= 2:
                z._zero2_merge_trainable_params(merged, world, flat_groups, zero_states,
                                                shards[0].get("param_alignment_paddings"))
            else:
                z._zero3_merge_trainable_params(merged, world, flat_groups, zero_states)
        return {k: v.contiguous().float().clone() for k, v in merged.items()}

    params = merge([s[flat_key] for s in shards])
    base = [s[base_key]["state"] for s in shards]
    groups = sorted(base[0])
    keys = [k for k, v in base[0][groups[0]].items() if torch.is_tensor(v) and v.dim() == 1]
    per_key = {k: merge([[b[g][k] for g in groups] for b in base]) for k in keys}
    states = {name: {k: per_key[k][name] for k in keys} for name in params}
    scalars = {k: v for k, v in base[0][groups[0]].items() if k not in keys}
    for alias, name in zero_states[0].shared_params:       # tied weights: one tensor, two names
        if name in params:
            params[alias], states[alias] = params[name], states[name]
    return Consolidated(params, states, scalars, states_file, stage)


def _consolidate_zero0(states_file: dict, model: torch.nn.Module) -> Consolidated:
    from pretrain.engine import parameter_groups

    params = {k: v.float() for k, v in states_file["module"].items() if torch.is_tensor(v)}
    optimizer = states_file.get("optimizer") or {}
    names = [n for group in parameter_groups(model) for n in group]
    if "fp32_groups" in optimizer:
        # bf16 weights: the fp32 masters and the inner optimizer (pretrain.master_weights, and
        # DeepSpeed's ZeRO-0 wrapper of earlier runs, whose layout it keeps)
        names = [n for group in optimizer.get("param_names", ()) for n in group] or names
        params.update(zip(names, (m.detach().float() for group in optimizer["fp32_groups"] for m in group)))
        optimizer = optimizer["optimizer_state_dict"]
    index = [i for g in optimizer.get("param_groups", []) for i in g["params"]]
    states, scalars = {}, {}
    for i, name in zip(index, names):
        state = optimizer["state"].get(i, {})
        states[name] = {k: v for k, v in state.items() if torch.is_tensor(v) and v.dim() > 0}
        scalars = scalars or {k: v for k, v in state.items() if k not in states[name]}
    return Consolidated(params, states, scalars, states_file, 0)


def check_supported(saved_zero: int, zero: int, optimizer: str, where: str) -> None:
    """The one layout change this module cannot do."""
    if optimizer == "adafactor" and (saved_zero == 0) != (zero == 0):
        raise ReshardError(f"{where} was saved with Adafactor under ZeRO-{saved_zero}; it resumes under ZeRO-0 only if "
                           f"saved under ZeRO-0 and vice versa (factored vs flat statistics). Use train.zero_stage="
                           f"{saved_zero}, or start a new RUN")


def _set_scalar(state: dict, key: str, value) -> None:
    old = state.get(key)
    state[key] = torch.full_like(old, float(value)) if torch.is_tensor(old) else (
        float(value) if torch.is_tensor(value) and old is not None else value)


def load(engine, folder: str | Path, scheduler) -> dict:
    """Write a consolidated checkpoint into ``engine`` (every rank calls this); returns the client state."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state
    from deepspeed.runtime.zero import GatheredParameters

    c = consolidate(folder, engine.module)
    named = dict(engine.module.named_parameters())
    missing = sorted(set(named) - set(c.params))
    if missing:
        raise ReshardError(f"{folder}: the checkpoint has no value for {missing[:3]} (another architecture?)")
    fragments = any(hasattr(p, "_hp_mapping") or hasattr(p, "ds_id") for p in named.values())
    optimizer = engine.optimizer
    base = getattr(optimizer, "optimizer", optimizer) if fragments else optimizer
    if fragments:          # a fresh optimizer creates its state at its first step: make room for ours
        keys = {k for state in c.states.values() for k in state}
        flats = (getattr(optimizer, "fp32_partitioned_groups_flat", None)           # ZeRO-3 (groups emptied)
                 or [flat for group in base.param_groups for flat in group["params"]])
        for flat in flats:
            for key in keys:
                base.state[flat].setdefault(key, torch.zeros_like(flat, dtype=torch.float32))
        link = getattr(optimizer, "_lazy_init_hp_params_optimizer_state", None)   # ZeRO-1/2, bf16: what the
        if link is not None:                                                      # first step would do
            link()
    with torch.no_grad():
        for name, p in named.items():
            value = c.params[name]
            with GatheredParameters([p], modifier_rank=0, enabled=hasattr(p, "ds_id")):
                p.data.copy_(value.view_as(p.data))
            if fragments:
                safe_set_full_fp32_param(p, value)
                for key, tensor in c.states.get(name, {}).items():
                    safe_set_full_optimizer_state(p, tensor, key)
    if not fragments:                       # a plain torch optimizer over the module's parameters
        master = getattr(optimizer, "master", None)        # or over their fp32 masters (bf16)
        for name, p in named.items():
            if master is not None:
                p = master(p)
                with torch.no_grad():
                    p.copy_(c.params[name].view_as(p))
            state = base.state[p]
            state.update({k: v.clone().view_as(p) for k, v in c.states.get(name, {}).items()})
    for state in base.state.values():
        for key, value in c.scalars.items():
            _set_scalar(state, key, value)
    saved = c.model_states
    if scheduler is not None and saved.get("lr_scheduler"):
        scheduler.load_state_dict(saved["lr_scheduler"])
        for group, lr in zip(base.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
    engine.global_steps = saved.get("global_steps", engine.global_steps)
    engine.global_samples = saved.get("global_samples", engine.global_samples)
    engine.skipped_steps = saved.get("skipped_steps", engine.skipped_steps)
    return saved
