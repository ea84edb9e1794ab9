"""Growth during training: the schedule, the architecture at any step, and the trainer's hook.

The model surgery itself (function-preserving depth and width growth) is in
``pretrain.surgery``. A run's growth schedule is ``RunConfig.growth``, e.g.
``[{at_step: 2000, layers: 12}]``: after optimizer step 2000 the trainer checkpoints,
enlarges the model, rebuilds the DeepSpeed engine and continues. Everything that needs
the model of a given step (resume, export, release) asks ``architecture_at``.
"""
from __future__ import annotations

import logging

import torch

from pipeline.typed_config import ConfigError, build
from pretrain.objectives.base import load_trained_state
from pretrain.surgery import GrowthError, GrowthStep, grow_module  # noqa: F401

log = logging.getLogger("pretrain")


def schedule(cfg) -> list[GrowthStep]:
    """``RunConfig.growth`` as GrowthSteps, validated with the config's one-line errors."""
    steps = []
    for i, raw in enumerate(cfg.growth or []):
        s = build(GrowthStep, raw, "config", prefix=f"growth[{i}].")
        if not 0 < s.at_step < cfg.train.steps:
            raise ConfigError(f"config: key 'growth[{i}].at_step' must be in 1..{cfg.train.steps - 1}, got {s.at_step}")
        if steps and s.at_step <= steps[-1].at_step:
            raise ConfigError(f"config: key 'growth[{i}].at_step' must be larger than the previous entry's")
        if s.describe() == "no change":
            raise ConfigError(f"config: key 'growth[{i}]' changes nothing (give layers, hidden, ffn or heads)")
        steps.append(s)
    return steps


def grow_seed(cfg, s: GrowthStep) -> int:
    return cfg.train.seed + s.at_step


def architecture_at(cfg, objective, step: int, steps: list[GrowthStep] | None = None) -> torch.nn.Module:
    """A fresh model with the architecture the run has after optimizer step ``step``.

    Growth at ``at_step`` happens after that step's checkpoint was written, so a checkpoint
    (or export) of step ``step`` has every growth with ``at_step < step`` applied.
    """
    model = objective.build_model()
    for s in schedule(cfg) if steps is None else steps:
        if s.at_step < step:
            model = grow_module(model, s, grow_seed(cfg, s))
    return model


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)


def _link_moments(optimizer) -> None:
    """ZeRO-1/2 link each parameter to its slice of the flat moments after a step, but
    (DeepSpeed 0.19) only for the group stepped last; relink every group."""
    if hasattr(optimizer, "_lazy_init_hp_params_optimizer_state"):
        optimizer._hp_optimizer_states_linked = False
        optimizer._lazy_init_hp_params_optimizer_state()


def _moment(p, key: str, inner):
    """Full (unpartitioned) optimizer state of a parameter under any ZeRO stage, or None."""
    from deepspeed.utils import safe_get_full_optimizer_state
    value = safe_get_full_optimizer_state(p, key)
    if value is None and p in inner.state:
        value = inner.state[p].get(key)
    return None if value is None else value.detach().float().cpu().clone()


def _expand_moment(v: torch.Tensor, kinds, exps) -> torch.Tensor:
    """Second moments follow the copies (an estimate: copies see similar gradients)."""
    for axis, kind in enumerate(kinds):
        e = exps.get(kind.lstrip("~")) if kind else None
        if e is not None:
            v = v.index_select(axis, e.index)
    return v


def apply(cfg, objective, engine, scheduler, step: int, ckpt_dir, rank: int, s: GrowthStep):
    """Enlarge the running model after ``step`` and rebuild the DeepSpeed engine.

    A DeepSpeed engine cannot be resized in place: take the full fp32 weights (ZeRO <= 2:
    the module holds them; ZeRO-3: consolidate the checkpoint just written), grow, build
    a new engine. AdamW moments are carried for parameters whose shape is unchanged;
    new blocks and widened parameters start with a zero first moment and the second
    moment of the weights they were copied from (ZeRO keeps one step counter per flat
    group, so all-zero moments would mean un-bias-corrected, several times larger first
    updates). The learning-rate schedule continues where it was.
    """
    from pretrain import checkpoint as ckpt
    from pretrain.engine import build_engine

    adamw = cfg.train.optimizer == "adamw"
    inner = _inner(engine.optimizer)
    _link_moments(engine.optimizer)
    moments = {}
    for name, p in engine.module.named_parameters():
        if adamw:
            moments[name] = (_moment(p, "exp_avg", inner), _moment(p, "exp_avg_sq", inner))
    old_count = next((st["step"] for st in inner.state.values() if "step" in st), None)
    lrs = [g["lr"] for g in engine.optimizer.param_groups]
    sched_state = scheduler.state_dict()
    if cfg.train.zero_stage == 3:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=ckpt.tag_for(step))
        model = load_trained_state(architecture_at(cfg, objective, step), state)
    else:
        model = engine.module.float()
    model = grow_module(model, s, grow_seed(cfg, s))
    trace = model.growth_trace
    del engine
    engine, optimizer, scheduler = build_engine(cfg, model)
    inner = _inner(engine.optimizer)
    if adamw:   # AdamW creates its state at the first step; create it now to fill it
        count = old_count.clone() if torch.is_tensor(old_count) else torch.tensor(float(old_count or 0))
        for group in inner.param_groups:
            for flat in group["params"]:
                inner.state[flat] = {"step": count.clone(), "exp_avg": torch.zeros_like(flat),
                                     "exp_avg_sq": torch.zeros_like(flat)}
        _link_moments(engine.optimizer)
    carried = fresh = 0
    from deepspeed.utils import safe_set_full_optimizer_state
    for name, p in engine.module.named_parameters():
        src, is_new, kinds, exps = trace.get(name, (name, True, (), {}))
        m, v = moments.get(src, (None, None))
        if m is None:
            continue
        shape = tuple(getattr(p, "ds_shape", p.shape))
        if not is_new and tuple(m.shape) == shape:
            carried += 1
        else:
            v = _expand_moment(v, kinds, exps)
            m = torch.zeros_like(v)
            fresh += 1
            if tuple(v.shape) != shape:
                continue
        if hasattr(p, "ds_id") or getattr(p, "_hp_mapping", None) is not None:
            safe_set_full_optimizer_state(p, m.to(p.device), "exp_avg")
            safe_set_full_optimizer_state(p, v.to(p.device), "exp_avg_sq")
        else:
            inner.state[p]["exp_avg"].copy_(m)
            inner.state[p]["exp_avg_sq"].copy_(v)
    scheduler.load_state_dict(sched_state)
    for g, lr in zip(engine.optimizer.param_groups, lrs):
        g["lr"] = lr
    if rank == 0:
        log.info("growth at step %d (%s): Adam state carried for %d tensors, started for %d",
                 step, s.describe(), carried, fresh)
    return engine, optimizer, scheduler
