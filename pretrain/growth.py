"""Growth during training: the schedule, the architecture at any step, and the trainer's hook.

The model surgery itself (function-preserving depth and width growth) is in
``pretrain.surgery``. A run's growth schedule is ``RunConfig.growth``, e.g.
``[{at_step: 2000, layers: 12}]``: after optimizer step 2000 the trainer checkpoints,
enlarges the model, rebuilds the DeepSpeed engine and continues. Everything that needs
the model of a given step (resume, export, release) asks ``architecture_at``.

An entry may instead say ``when: slope`` (with ``window`` and ``threshold``): the trainer
grows once the logged training loss flattens, i.e. the mean loss of the last ``window``
steps is less than ``threshold`` (relative) below the mean of the window before
(``slope_due``). The step it chose is written to ``RUN/growth.json`` before the model
grows, so resume, export and release rebuild the same architecture; a replayed run
decides the same step anyway (its losses are bit-identical).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from pipeline.typed_config import ConfigError, build
from pretrain.objectives.base import load_trained_state
from pretrain.surgery import GrowthError, GrowthStep, grow_module  # noqa: F401

log = logging.getLogger("pretrain")


RESOLVED_FILE = "growth.json"


def schedule(cfg) -> list[GrowthStep]:
    """``RunConfig.growth`` as GrowthSteps, validated with the config's one-line errors; ``when: slope``
    entries carry the step the run chose (``RUN/growth.json``), or at_step 0 while still open."""
    steps = []
    chosen = resolved_steps(cfg.run_dir)
    for i, raw in enumerate(cfg.growth or []):
        s = build(GrowthStep, raw, "config", prefix=f"growth[{i}].")
        key = f"config: key 'growth[{i}]"
        if s.when == "slope":
            if s.at_step:
                raise ConfigError(f"{key}.at_step' is chosen by the run with when: slope; leave it out")
            if s.window <= 0 or s.threshold <= 0:
                raise ConfigError(f"{key}' (when: slope) needs window > 0 and threshold > 0")
            if steps and steps[-1].when == "step" and s.max_step and s.max_step <= steps[-1].at_step:
                raise ConfigError(f"{key}.max_step' must be larger than the previous entry's at_step")
            s.at_step = chosen[i] if i < len(chosen) else 0
        elif not 0 < s.at_step < cfg.train.steps:
            raise ConfigError(f"{key}.at_step' must be in 1..{cfg.train.steps - 1}, got {s.at_step}")
        if s.at_step and any(p.at_step and s.at_step <= p.at_step for p in steps):
            raise ConfigError(f"{key}.at_step' must be larger than the previous entry's")
        if s.when == "step" and any(p.when == "slope" for p in steps):
            raise ConfigError(f"{key}' follows a when: slope entry, so it must be when: slope too")
        if s.describe() == "no change":
            raise ConfigError(f"{key}' changes nothing (give layers, hidden, ffn or heads)")
        steps.append(s)
    return steps


def resolved_steps(run_dir) -> list[int]:
    """The growth steps a run chose so far (``RUN/growth.json``), entry by entry."""
    if not run_dir:
        return []
    try:
        return list(json.loads((Path(run_dir) / RESOLVED_FILE).read_text(encoding="utf-8"))["at_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def slope_due(entry: GrowthStep, history: list[tuple[int, float]], step: int, since: int = 0) -> bool:
    """Whether a ``when: slope`` entry should grow now, after ``step``.

    ``history`` is (step, training loss) since the last growth (at ``since``). Grow when the
    mean loss of the last ``window`` steps is less than ``threshold`` (relative) below the mean
    of the ``window`` steps before, or at ``max_step``; never before ``min_step`` (default:
    two full windows after the last growth).
    """
    if entry.max_step and step >= entry.max_step:
        return True
    if step < max(entry.min_step, since + 2 * entry.window):
        return False
    last = [v for s, v in history if step - entry.window < s <= step]
    before = [v for s, v in history if step - 2 * entry.window < s <= step - entry.window]
    if not last or not before:
        return False
    now, prev = sum(last) / len(last), sum(before) / len(before)
    return (prev - now) / max(abs(now), 1e-12) < entry.threshold


class Tracker:
    """The schedule while a run trains: which entry grows at a step, and the slope decisions.

    ``observe`` is fed the logged (all-rank mean) loss, so every rank decides the same step;
    rank 0 records it in RUN/growth.json. ``state_dict`` goes into checkpoints (the loss
    history a pending slope decision reads).
    """

    def __init__(self, cfg, steps: list[GrowthStep], rank: int):
        self.cfg, self.steps, self.rank = cfg, steps, rank
        self.history: list[tuple[int, float]] = []

    def due(self, step: int) -> GrowthStep | None:
        return next((s for s in self.steps if s.at_step and s.at_step == step), None)

    def observe(self, step: int, loss: float) -> None:
        pending = next((i for i, s in enumerate(self.steps) if not s.at_step), None)
        if pending is None:
            return
        since = max([s.at_step for s in self.steps if s.at_step] + [0])
        if step <= since:          # this loss belongs to the model before the last growth
            return
        self.history.append((step, loss))
        if slope_due(self.steps[pending], self.history, step, since) and step < self.cfg.train.steps:
            self.steps[pending].at_step = step
            self.history = []
            log.info("growth[%d] (when: slope): the loss flattened at step %d; growing there", pending, step)
            if self.rank == 0:
                self._record()

    def _record(self) -> None:
        path = Path(self.cfg.run_dir) / RESOLVED_FILE
        tmp = path.with_name(path.name + ".tmp")
        chosen = [s.at_step for s in self.steps]
        tmp.write_text(json.dumps({"at_step": chosen[:next((i for i, c in enumerate(chosen) if not c), len(chosen))]}),
                       encoding="utf-8")
        os.replace(tmp, path)

    def state_dict(self) -> dict:
        return {"history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict | None) -> None:
        self.history = [tuple(h) for h in (state or {}).get("history", [])]


def grow_seed(cfg, s: GrowthStep) -> int:
    return cfg.train.seed + s.at_step


def architecture_at(cfg, objective, step: int, steps: list[GrowthStep] | None = None) -> torch.nn.Module:
    """A fresh model with the architecture the run has after optimizer step ``step``.

    Growth at ``at_step`` happens after that step's checkpoint was written, so a checkpoint
    (or export) of step ``step`` has every growth with ``at_step < step`` applied.
    """
    model = objective.build_model()
    for s in schedule(cfg) if steps is None else steps:
        if 0 < s.at_step < step:
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


def _moment(p, key: str, inner, master):
    """Full (unpartitioned) optimizer state of a parameter under any ZeRO stage, or None."""
    from deepspeed.utils import safe_get_full_optimizer_state
    value = safe_get_full_optimizer_state(p, key)
    p = master(p) if master is not None else p
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
    the module holds them, or bf16 at ZeRO-0 their masters; ZeRO-3: consolidate the checkpoint
    just written), grow, build
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
    master = getattr(engine.optimizer, "master", None)     # bf16 at ZeRO-0: fp32 masters (pretrain.master_weights)
    _link_moments(engine.optimizer)
    moments = {}
    for name, p in engine.module.named_parameters():
        if adamw:
            moments[name] = (_moment(p, "exp_avg", inner, master), _moment(p, "exp_avg_sq", inner, master))
    old_count = next((st["step"] for st in inner.state.values() if "step" in st), None)
    lrs = [g["lr"] for g in engine.optimizer.param_groups]
    sched_state = scheduler.state_dict()
    if cfg.train.zero_stage == 3:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        with ckpt.safe_loads(ckpt_dir / ckpt.tag_for(step)):
            state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=ckpt.tag_for(step))
        model = load_trained_state(architecture_at(cfg, objective, step), state)
    else:
        model = engine.module
        if master is not None:
            with torch.no_grad():
                for p in model.parameters():
                    if p.requires_grad:
                        p.data = master(p).detach().clone()
        model = model.float()
    model = grow_module(model, s, grow_seed(cfg, s))
    trace = model.growth_trace
    del engine
    engine, optimizer, scheduler = build_engine(cfg, model)
    inner = _inner(engine.optimizer)
    master = getattr(engine.optimizer, "master", None)
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
            state = inner.state[master(p) if master is not None else p]
            state["exp_avg"].copy_(m)
            state["exp_avg_sq"].copy_(v)
    scheduler.load_state_dict(sched_state)
    for g, lr in zip(engine.optimizer.param_groups, lrs):
        g["lr"] = lr
    if rank == 0:
        log.info("growth at step %d (%s): Adam state carried for %d tensors, started for %d",
                 step, s.describe(), carried, fresh)
    return engine, optimizer, scheduler
