"""The one trainer: every objective (collator + model + loss) runs through this loop.

Launch: ``python -m pretrain.train --config configs/t5-pegasus.yaml [key=value ...]``
directly (one process) or under ``torchrun`` / ``deepspeed`` / ``srun``. Re-running
the same command on an existing run directory resumes from its latest intact
checkpoint: model, optimizer, scheduler, RNG states, data position and step; on another
number of processes or ZeRO stage too (``pretrain.reshard``; the data position is global).
SIGTERM / SIGUSR1 (SLURM's preemption warning) make every rank save a
checkpoint at the next step boundary and exit.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pretrain import checkpoint as ckpt
from pretrain import growth
from pretrain.config import ConfigError, RunConfig, load_config, load_run_config, save_config
from pretrain.data import DataError, ShardStream, TrainData, list_shards, sources, valid_batches
from pretrain.phases import Phases

log = logging.getLogger("pretrain")
EXIT_PREEMPTED = 0


class TrainingError(RuntimeError):
    """A condition that stops training with a one-line message."""


# ---------------------------------------------------------------- utilities
def step_gradients(engine) -> list[torch.Tensor]:
    """The gradients a ZeRO-0 step uses: in bf16 the fp32 copies (``MasterWeights.gradients``), else the model's."""
    gradients = getattr(engine.optimizer, "gradients", None)
    return gradients() if gradients else [p.grad for p in engine.module.parameters() if p.grad is not None]


def clip_and_norm(engine, world: int, max_norm: float = 0.0) -> float:
    """Global gradient norm before a ZeRO-0 step (inf if any gradient is inf/NaN), clipping to
    ``max_norm`` with it when > 0 (``engine.clips_itself``).

    ZeRO-0 has no overflow check of its own and clears the gradients inside step(), so the
    norm that metrics.jsonl reports is taken here. One foreach norm instead of an isfinite
    pass per tensor (~15x cheaper); the gradients are already averaged over ranks. Reading
    it is the step's one host sync, so a step that does not clip skips torch's multiply by 1.
    bf16 weights: the norm and the clip are those of the gradients' fp32 copies that the step
    uses (``pretrain.master_weights``); ``get_total_norm`` of bf16 tensors returns a bf16 norm.
    """
    grads = step_gradients(engine)
    total = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else torch.zeros(())
    norm = float(total)
    if max_norm > 0 and math.isfinite(norm) and norm + 1e-6 > max_norm:
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))   # clip_grads_with_norm_'s
    flag = torch.tensor([norm if math.isfinite(norm) else float("inf")], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item()


def backward(engine, loss) -> bool:
    """``engine.backward(loss)``; between the micro-batches of a step, bf16 at ZeRO-0 then moves the
    gradients into its fp32 buffers (``MasterWeights.accumulate``). Returns whether this micro-batch
    ends the step."""
    engine.backward(loss)
    boundary = engine.is_gradient_accumulation_boundary()
    if not boundary and hasattr(engine.optimizer, "accumulate"):
        engine.optimizer.accumulate()
    return boundary


class DeviceChecks:
    """The finite checks of ``train.finite_check=log``: nothing is read on the host between log steps.

    The per-step path reads each micro-batch's loss (to drop a non-finite one before its backward)
    and the step's gradient norm (to clip, and to skip a non-finite step): two host syncs a step,
    which on a GPU stall the launch queue. Here every micro-batch runs its backward; at the step's
    end the norm stays on the device, the clip factor is applied as a device scalar (x 1 where
    there is nothing to clip, which changes no bit), and a step whose loss or norm is not finite
    hands ``found_inf`` to the optimizer (torch's fused AdamW, ``pretrain.adafactor``, through
    ``MasterWeights`` in bf16), which then leaves weights and moments as they were. The step
    counts as a step; skips, the longest run of them and the mean finite loss are read at the
    log step. ZeRO-0 only, where the trainer owns the clip and the step.
    """

    def __init__(self, device: torch.device):
        zero = lambda dtype: torch.zeros((), dtype=dtype, device=device)      # noqa: E731
        self.bad = zero(torch.bool)                   # this step: a micro-batch's loss was not finite
        self.skipped = zero(torch.bool)               # this step was skipped
        self.loss_sum, self.loss_n = zero(torch.float64), zero(torch.float64)   # finite losses, this window
        self.window_skips, self.run, self.longest = zero(torch.int64), zero(torch.int64), zero(torch.int64)

    def micro_batch(self, loss: torch.Tensor) -> torch.Tensor:
        value = loss.detach().float()
        ok = torch.isfinite(value)
        self.bad |= ~ok
        self.loss_sum += torch.where(ok, value, 0.0).double()
        self.loss_n += ok
        return value

    def clip_and_skip(self, engine, world: int, max_norm: float) -> torch.Tensor:
        """``clip_and_norm`` on the device: the norm (a device tensor), clipping, the skip flag."""
        grads = step_gradients(engine)
        total = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else torch.zeros((), device=self.bad.device)
        bad = self.bad.clone()
        if world > 1:                                 # one rank's bad loss is every rank's skip
            flag = bad.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = flag.bool()
        self.skipped = bad | ~torch.isfinite(total)
        if max_norm > 0 and grads:
            torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        engine.optimizer.found_inf = self.skipped.float()
        return torch.where(self.skipped, torch.full_like(total, float("inf")), total)

    def end_step(self) -> None:
        self.window_skips += self.skipped
        self.run = (self.run + 1) * self.skipped
        self.longest = torch.maximum(self.longest, self.run)
        self.bad.zero_()

    def read_window(self) -> tuple[float, int, int]:
        """(mean finite loss or NaN, steps skipped, longest run of skips) since the last call: host reads."""
        n = self.loss_n.item()
        out = (self.loss_sum.item() / n if n else float("nan"), int(self.window_skips.item()), int(self.longest.item()))
        for t in (self.loss_sum, self.loss_n, self.window_skips):
            t.zero_()
        self.longest.copy_(self.run)                  # a run still going carries into the next window
        return out


def device_checks(cfg: RunConfig, device: torch.device) -> bool:
    """Whether ``train.finite_check`` keeps the checks on the device (``DeviceChecks``)."""
    from pretrain.engine import clips_itself

    mode = cfg.train.finite_check
    if mode == "step":
        return False
    if not clips_itself(cfg):
        if mode == "log":
            raise TrainingError(f"train.finite_check=log needs ZeRO-0 in fp32, amp-bf16 or bf16 (got ZeRO-"
                                f"{cfg.train.zero_stage}, {cfg.train.precision}): set train.zero_stage=0 (ZERO=0) or "
                                f"train.finite_check=step")
        return False
    return mode == "log" or device.type == "cuda"


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Preemption:
    """Remembers a SIGTERM/SIGUSR1 so the loop can checkpoint at a step boundary."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signum

    def requested(self, world: int) -> bool:
        flag = torch.tensor([1 if self.signal else 0])
        if world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop records logged after `step` (a killed run may have logged past its last checkpoint)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep), encoding="utf-8")
    os.replace(tmp, path)


class MetricsLog:
    """metrics.jsonl (append, flushed per record) and TensorBoard, on rank 0 only."""

    def __init__(self, run_dir: Path, rank: int):
        self.rank = rank
        self.fh = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if rank == 0 else None
        self.tb = None
        if rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                self.tb = None

    def write(self, record: dict) -> None:
        if self.fh is None:
            return
        self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.fh.flush()
        if self.tb is not None:
            prefix = record.get("split", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])

    def close(self):
        if self.fh:
            self.fh.close()
        if self.tb:
            self.tb.close()


def to_device(batch: dict, device, non_blocking: bool = False) -> dict:
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


def gather_states(state: dict, world: int) -> list:
    if world == 1:
        return [state]
    out = [None] * world
    dist.all_gather_object(out, state)
    return out


# Dense bf16 peak of known accelerators, for the MFU estimate (6 * params * tokens/s / peak).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "A800": 312.0, "H800": 989.0, "L40S": 362.0,
               "A10": 125.0, "V100": 125.0, "4090": 165.0}


def peak_device_flops(cfg: RunConfig) -> float:
    """The MFU denominator: train.peak_tflops, the dense bf16 peak of a known GPU, or on a CPU this
    process's measured matmul throughput in the run's matmul precision (at start, so machine load
    moves it)."""
    if cfg.train.peak_tflops > 0:
        return cfg.train.peak_tflops * 1e12
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
        return 0.0
    return matmul_peak_flops("float32" if cfg.train.precision == "fp32" else "bfloat16")


class PeakFlops:
    """The MFU denominator (``peak_device_flops``). Measured on a CPU, it can come out at half the
    machine's rate when the process starts in a busy moment (stop 50: 214 against 411 GFLOP/s,
    and that run logged 71 % MFU), so the first ``again`` log steps measure it again and keep the best."""

    def __init__(self, cfg: RunConfig, device, again: int = 3):
        self.flops = peak_device_flops(cfg)
        measured = device.type == "cpu" and cfg.train.peak_tflops <= 0
        self.again = again if measured else 0
        self.dtype = "float32" if cfg.train.precision == "fp32" else "bfloat16"

    def refresh(self) -> float:
        if self.again:
            self.again -= 1
            self.flops = max(self.flops, matmul_peak_flops(self.dtype))
        return self.flops


def slow_bf16(bf16_flops: float, fp32_flops: float) -> str | None:
    """One warning line where this CPU multiplies bf16 slower than fp32, else None. Without
    AVX512-BF16 torch converts every operand (a quarter of the fp32 rate on stop 46's Intel host);
    with AVX512-BF16 but no AMX it ran at half (BENCHMARKS.md)."""
    if bf16_flops >= fp32_flops:
        return None
    return (f"this CPU multiplies bf16 at {bf16_flops / 1e9:.0f} GFLOP/s and fp32 at {fp32_flops / 1e9:.0f} GFLOP/s: "
            f"train.precision=fp32 would run the matmuls about {fp32_flops / bf16_flops:.1f}x faster "
            f"(`lscpu | grep -E 'avx512_bf16|amx_bf16'` lists its bf16 support)")


def matmul_peak_flops(dtype_name: str = "float32", n: int = 1024, repeats: int = 5) -> float:
    """Measured square-matmul throughput of this process's threads (FLOP/s): the best of ``repeats``."""
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)    # its own stream: a resumed run measures after restoring the RNG
    a, b = (torch.randn(n, n, generator=gen).to(dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def count_params(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += getattr(p, "ds_numel", p.numel())
    return total


# ---------------------------------------------------------------- validation
@torch.no_grad()
def validate(engine, objective, cfg: RunConfig, rank: int, world: int, device) -> dict:
    """Mean loss over the first eval_batches of each rank's slice of the validation shards.

    Masks, noise and pair draws come from a fixed seed, so every validation scores the same
    batches (losses at different steps are comparable) and training's RNG streams are untouched."""
    shards = list_shards(objective.valid_dir, "valid")
    if not shards:
        return {}
    saved = rng_state()
    seed_everything(cfg.train.seed + 7919 * (rank + 1))
    try:
        return _validate(engine, objective, cfg, rank, world, device, shards)
    finally:
        set_rng_state(saved)


def _validate(engine, objective, cfg: RunConfig, rank: int, world: int, device, shards) -> dict:
    engine.eval()
    total, n = torch.zeros(2), 0
    for batch in valid_batches(cfg, objective, rank, world):
        loss, _ = objective.loss(engine, to_device(batch, device))
        total += torch.tensor([loss.float().item(), 1.0])
        n += 1
        if n >= cfg.train.eval_batches:
            break
    # Ranks may hold different numbers of batches; every rank joins the reduction.
    if world > 1:
        dist.all_reduce(total)
    out = {"loss": total[0].item() / max(total[1].item(), 1.0)} if total[1] > 0 else {}
    if cfg.train.eval_generate > 0:
        head = ShardStream(shards, 0, 1, seed=0, shuffle=False, loop=False)
        records = [r for _, r in zip(range(cfg.train.eval_generate), head)]
        out.update(objective.evaluate(engine.module, records))
    engine.train()
    return out


# ---------------------------------------------------------------- main loop
def train(cfg: RunConfig, config_source: str = "") -> int:
    from tqdm import tqdm

    from pretrain.engine import HeapCap, build_engine, clips_itself, flat_adafactor, init_distributed, reuse_freed_memory

    rank, world, local = init_distributed()
    threads = cfg.train.num_threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    torch.set_num_threads(threads)
    if not torch.cuda.is_available():
        # Denormal floats appear as T5 trains and slow CPU matmuls about 2x.
        torch.set_flush_denormal(True)
    heap = HeapCap() if not torch.cuda.is_available() and cfg.train.cpu_heap_reuse and reuse_freed_memory() else None
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    on_device = device_checks(cfg, device)            # train.finite_check (DeviceChecks)
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    lock = hold_run_lock(run_dir, rank, world)     # before anything in RUN is touched
    if rank == 0:
        ckpt.clean_partials(ckpt_dir)
    dist.barrier()

    seed_everything(cfg.train.seed + rank)
    objective = cfg.objective_class(cfg)
    _check_run_identity(cfg, objective, run_dir, rank)
    from pipeline.corpus import verify   # the manifests' sha256 sums, once per node (every rank checks sizes on open)
    folders = {objective.train_dir, objective.valid_dir,
               *(f for s in sources(cfg, objective) for f in (s.data_dir, s.tokens_dir) if f)}
    if cfg.data.tokens:
        folders.add(cfg.data.tokens_dir)
    together(lambda: [verify(d, cfg.data.verify) for d in sorted(folders)], local == 0, world)
    steps_before = _saved_steps(run_dir)
    latest = ckpt.find_latest(ckpt_dir, local)
    schedule = growth.schedule(cfg)
    # A fresh run starts from the objective's initial model (random, or INIT= weights); a resumed one
    # from the architecture of its checkpoint's step (grown, if a growth step came before it).
    model = growth.architecture_at(cfg, objective, latest[1], schedule) if latest else objective.initial_model()
    n_params = count_params(model)
    total = cfg.train.steps
    if latest and latest[1] >= total:
        if rank == 0:
            log.info("%s is already at step %d >= train.steps=%d: nothing to train (raise STEPS to continue)",
                     run_dir, latest[1], total)
        if _export_step(run_dir) != latest[1]:
            export_checkpoint(objective, cfg, ckpt_dir, latest[0], latest[1], rank, schedule)
        lock and lock.close()
        return 0
    engine, optimizer, scheduler = build_engine(cfg, model)

    tracker = growth.Tracker(cfg, schedule, rank)
    step, position = 0, None
    if latest:
        tag, step = latest
        client = resume(engine, scheduler, cfg, ckpt_dir / tag, rank, world)
        position = data_position(client)
        tracker.load_state_dict(client.get("growth"))
        if rank == 0:
            log.info("resumed from %s (step %d)", ckpt_dir / tag, step)
            if steps_before is not None and steps_before != total:
                log.info("train.steps changed from %d to %d: the %s learning-rate schedule now ends at step %d; "
                         "from step %d on, lr = %.3g (was %.3g)", steps_before, total, cfg.train.schedule, total,
                         step, scheduler.get_last_lr()[0], _lr_at(cfg, steps_before, step))
    # Records logged after the checkpoint we start from (a killed run, or a run that never saved);
    # rank 0 also cuts the traces of ranks a run on more processes had.
    truncate_jsonl(run_dir / "trace" / f"rank-{rank}.jsonl", step)
    if rank == 0:
        truncate_jsonl(run_dir / "metrics.jsonl", step)
        for extra in (run_dir / "trace").glob("rank-*.jsonl"):
            if int(extra.stem.split("-")[1]) >= world:
                truncate_jsonl(extra, step)
        save_config(cfg, run_dir / "config.yaml")

    metrics = MetricsLog(run_dir, rank)
    peak = PeakFlops(cfg, device)
    phases = Phases(cfg.train.profile_steps, skip=step + cfg.train.log_every)   # after the compile / warm-up window
    own_clip = clips_itself(cfg)
    trace = None
    if cfg.train.trace_samples:
        (run_dir / "trace").mkdir(parents=True, exist_ok=True)
        trace = open(run_dir / "trace" / f"rank-{rank}.jsonl", "a", encoding="utf-8")
    preempt = Preemption()
    bar = tqdm(total=total, initial=step, desc=f"{cfg.model} [{cfg.size}]", unit="step",
               disable=rank != 0, dynamic_ncols=True, file=sys.stderr)
    if rank == 0:
        log.info("%s %s: %.2fM parameters, world %d, ZeRO-%d, %s, %d threads/process", cfg.model, cfg.size,
                 n_params / 1e6, world, cfg.train.zero_stage, cfg.train.precision, threads)
        warning = flat_adafactor(cfg)
        if warning:
            log.warning(warning)
        if device.type == "cpu" and cfg.train.precision in ("bf16", "amp-bf16") and cfg.train.peak_tflops <= 0:
            warning = slow_bf16(peak.flops, matmul_peak_flops("float32"))
            if warning:
                log.warning(warning)

    data = TrainData(cfg, objective, rank, world, position, pin_memory=device.type == "cuda")
    layout = {"zero_stage": cfg.train.zero_stage, "optimizer": cfg.train.optimizer}

    def save_now():
        state = gather_states({"rng": rng_state()}, world)
        ckpt.save(engine, ckpt_dir, step, {"ranks": state, "step": step, "data": data.state,
                                           "growth": tracker.state_dict()}, cfg.train.keep_last, rank, layout)

    def count_bad(what: str, action: str, step: int, in_a_row: int, total_bad: int) -> tuple[int, int]:
        """Count a non-finite loss/gradient; stop the run after max_bad_steps in a row."""
        in_a_row, total_bad = in_a_row + 1, total_bad + 1
        if rank == 0:
            log.warning("non-finite %s at step %d: %s (%d in a row)", what, step + 1, action, in_a_row)
        if in_a_row >= cfg.train.max_bad_steps:
            raise TrainingError(f"{in_a_row} consecutive non-finite losses/gradients at step {step + 1}; "
                                f"lower train.lr or check the data")
        return in_a_row, total_bad

    try:
        it = iter(data)
        bad_in_a_row, bad_total = 0, 0
        window_tokens, window_samples, window_start = 0, 0, time.perf_counter()
        window_sources = [0] * len(data.names)
        window_data_s, window_flops = 0.0, 0.0
        window_terms: dict[str, float] = {}
        window_losses: list[float] = []
        last_saved = last_logged = step
        checks = DeviceChecks(device) if on_device else None
        engine.train()
        while step < total:
            if preempt.requested(world):
                if rank == 0:
                    log.warning("signal %s received: saving checkpoint at step %d and exiting", preempt.signal, step)
                save_now()
                bar.close()
                metrics.close()
                return EXIT_PREEMPTED
            grow_now = tracker.due(step)
            if grow_now:   # pretrain.growth: checkpoint, enlarge, rebuild engine + optimizer
                if last_saved != step:
                    save_now()
                    last_saved = step
                engine, optimizer, scheduler = growth.apply(cfg, objective, engine, scheduler, step, ckpt_dir, rank,
                                                            grow_now)
                n_params = count_params(engine.module)
                engine.train()
            # One optimizer step = grad_accum micro-batches; DeepSpeed wants step() after each
            # backward and applies the update at the accumulation boundary. Host syncs: the loss
            # value once per micro-batch (finite check), the ZeRO-0 gradient norm once per step;
            # terms stay on the device until a log step.
            step_loss, step_terms, micro, step_ids, step_pos = 0.0, {}, 0, [], []
            pre_step_norm = 0.0
            grad_overflow = False
            phases.start()
            while micro < cfg.train.grad_accum:
                t_data = time.perf_counter()
                cpu_batch, meta = next(it)
                n_tokens, n_flops = objective.tokens_in(cpu_batch), objective.train_flops(engine.module, cpu_batch)
                batch = to_device(cpu_batch, device, non_blocking=data.pin)
                window_data_s += time.perf_counter() - t_data   # waiting for the batch (+ tokenizing, on the fly)
                phases.mark("data")
                loss, terms = objective.loss(engine, batch)
                phases.mark("forward")
                if checks is not None:
                    loss_value = checks.micro_batch(loss)         # stays on the device (DeviceChecks)
                else:
                    loss_value = loss.detach().float().item()
                    finite = torch.tensor([1.0 if math.isfinite(loss_value) else 0.0])
                    if world > 1:
                        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
                    phases.mark("bookkeeping")
                    if finite.item() < 1:
                        # Every rank drops this micro-batch (no backward, no step) and counts it.
                        bad_in_a_row, bad_total = count_bad("loss", "micro-batch skipped", step, bad_in_a_row,
                                                            bad_total)
                        continue
                boundary = backward(engine, loss)
                phases.mark("backward")
                if cfg.train.zero_stage == 0 and boundary and checks is not None:
                    pre_step_norm = checks.clip_and_skip(engine, world, cfg.train.grad_clip)
                elif cfg.train.zero_stage == 0 and boundary:
                    pre_step_norm = clip_and_norm(engine, world, cfg.train.grad_clip if own_clip else 0.0)
                    if not math.isfinite(pre_step_norm):
                        # Neutralize the update: zero gradients and a zero learning rate for this step
                        # (the scheduler sets the next step's rate again inside engine.step()).
                        engine.optimizer.zero_grad(set_to_none=False)
                        for group in engine.optimizer.param_groups:
                            group["lr"] = 0.0
                        grad_overflow = True
                skipped_before = engine.skipped_steps
                engine.step()
                phases.mark("optimizer")
                grad_overflow = grad_overflow or engine.skipped_steps > skipped_before   # ZeRO>=1 skips by itself
                micro += 1
                step_loss += loss_value / cfg.train.grad_accum
                for k, v in terms.items():     # floats or device tensors (read at the next log step)
                    v = v.detach() if torch.is_tensor(v) else v
                    step_terms[k] = step_terms.get(k, 0.0) + v / cfg.train.grad_accum
                window_tokens += n_tokens
                window_flops += n_flops
                window_samples += len(meta.ids)
                window_sources = [a + b for a, b in zip(window_sources, meta.sources)]
                step_ids += meta.ids
                step_pos += [meta.first + j for j in range(len(meta.ids))]
                phases.mark("bookkeeping")
            if grad_overflow:
                # The update was not applied: count it, do not advance the step.
                bad_in_a_row, bad_total = count_bad("gradient", "update skipped", step, bad_in_a_row, bad_total)
                continue
            if checks is not None:
                checks.end_step()
            bad_in_a_row = 0
            step += 1
            if heap is not None and heap.after_step() and math.log10(heap.trims).is_integer():   # 1st, 10th, ...
                log.warning("rank %d step %d: %.1f GB of freed memory piled up in the heap; handed back to the OS "
                            "(trim %d; train.cpu_heap_reuse=false keeps glibc's default)", rank, step,
                            heap.trimmed / 2**30, heap.trims)
            if trace is not None:
                trace.write(json.dumps({"step": step, "loss": float(step_loss), "ids": step_ids, "pos": step_pos},
                                       ensure_ascii=False) + "\n")
                trace.flush()
            bar.update(1)
            if checks is None:
                window_losses.append(step_loss)
            for k, v in step_terms.items():
                window_terms[k] = window_terms.get(k, 0.0) + v

            if step % cfg.train.log_every == 0 or step == total:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                if checks is not None:
                    window_loss, skips, longest = checks.read_window()
                    n = step - last_logged
                    bad_total += skips
                    if skips and rank == 0:
                        log.warning("non-finite loss or gradient: %d of steps %d-%d skipped (%d in a row at most)",
                                    skips, last_logged + 1, step, longest)
                    if longest >= cfg.train.max_bad_steps:
                        raise TrainingError(f"{longest} consecutive non-finite losses/gradients by step {step}; "
                                            f"lower train.lr or check the data")
                else:
                    n = len(window_losses)
                    window_loss = sum(window_losses) / n
                last_logged = step
                names = sorted(window_terms)
                # Loss and terms are averaged over ranks; tokens and samples are summed.
                sums = torch.tensor([float(window_tokens), float(window_samples), window_loss, window_flops]
                                    + [float(window_terms[k]) / n for k in names] + window_sources,
                                    dtype=torch.float64)
                if world > 1:
                    dist.all_reduce(sums)
                tokens_per_s = sums[0].item() / elapsed
                rec = {"step": step, "loss": sums[2].item() / world, "lr": scheduler.get_last_lr()[0],
                       "grad_norm": _grad_norm(engine, pre_step_norm), "tokens_per_s": tokens_per_s,
                       "samples_per_s": sums[1].item() / elapsed,
                       "flops_per_s": sums[3].item() / elapsed, "skipped_steps": bad_total,
                       "data_time_frac": window_data_s / elapsed}
                if peak.refresh():          # (measured outside the window: its clock restarts below)
                    rec["mfu"] = rec["flops_per_s"] / (peak.flops * world)
                rec.update({k: sums[4 + i].item() / world for i, k in enumerate(names)})
                if heap is not None:
                    rec.update(heap.stats())         # this rank's (rank 0 writes the metrics)
                if len(data.names) > 1:     # data.mix: samples drawn per source in this window, epochs so far
                    rec.update({f"samples_{n}": int(sums[4 + len(names) + i].item()) for i, n in enumerate(data.names)})
                    rec.update({f"epoch_{n}": e for n, e in data.epochs().items()})
                metrics.write(rec)
                if math.isfinite(rec["loss"]):      # a window of skipped steps has no loss (finite_check=log)
                    tracker.observe(step, rec["loss"])   # growth when: slope (the same decision on every rank)
                phases.mark("bookkeeping")
                bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
                window_tokens, window_samples, window_start = 0, 0, time.perf_counter()
                window_terms, window_losses, window_data_s, window_flops = {}, [], 0.0, 0.0
                window_sources = [0] * len(data.names)

            phases.mark("bookkeeping")
            phases.end_step(step)

            if step % cfg.train.eval_every == 0 or step == total:
                vals = validate(engine, objective, cfg, rank, world, device)
                if vals:
                    metrics.write({"step": step, "split": "valid", **vals})
                    if rank == 0:
                        bar.write(f"step {step} valid " + " ".join(
                            f"{k}={int(v)}" if float(v).is_integer() and abs(v) >= 1 else f"{k}={v:.4f}"
                            for k, v in vals.items()))
                window_start = time.perf_counter()

            if cfg.train.probe_every and (step % cfg.train.probe_every == 0 or step == total):
                rec = run_probe(engine, objective, cfg, rank)
                if rec:
                    metrics.write({"step": step, "split": "probe", **rec})
                    if rank == 0:
                        bar.write(f"step {step} probe " + " ".join(f"{k}={v:.2f}" for k, v in rec.items()))
                window_start = time.perf_counter()

            if step % cfg.train.save_every == 0 or step == total:
                save_now()
                last_saved = step
                window_start = time.perf_counter()
    finally:
        bar.close()       # the bar ends its line before any error message
    if last_saved != step:
        save_now()
    if rank == 0:
        phases.write(run_dir / "profile.json")
    export(engine, objective, cfg, ckpt_dir, step, rank, schedule)
    metrics.close()
    lock and lock.close()
    return 0


def run_probe(engine, objective, cfg: RunConfig, rank: int) -> dict:
    """A linear probe of the encoder on a downstream dev set (rank 0; every rank waits). ZeRO-3
    parameters are gathered first. A probe that cannot run (no data here) is logged once and off."""
    from pretrain.evaluation.probe import probe

    result: dict = {}
    params = list(engine.module.parameters())
    gather = cfg.train.zero_stage == 3
    if gather:
        import deepspeed
        ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    else:
        import contextlib
        ctx = contextlib.nullcontext()
    with ctx:
        if rank == 0:
            try:
                out = probe(objective.probe_model(engine.module), objective.tokenizer, cfg.train.probe_task)
                result = {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}
            except (OSError, ValueError) as exc:
                log.warning("probe disabled: %s", exc)
                cfg.train.probe_every = 0
    if dist.get_world_size() > 1:
        flag = [cfg.train.probe_every]
        dist.broadcast_object_list(flag, src=0)
        cfg.train.probe_every = flag[0]
    return result


def resume(engine, scheduler, cfg: RunConfig, folder: Path, rank: int, world: int) -> dict:
    """Load a checkpoint into the engine and restore this rank's RNG; returns its client state.

    The same number of processes and ZeRO stage: DeepSpeed's own loader (bit-exact resume).
    Otherwise ``pretrain.reshard`` consolidates the checkpoint and loads it into this layout;
    a rank the checkpoint had keeps its RNG stream, a new rank starts one of its own.
    """
    from pretrain import reshard

    saved = ckpt.saved_layout(folder)
    same = saved.get("world_size") == world and saved.get("zero_stage") == cfg.train.zero_stage
    if same:
        with ckpt.safe_loads(folder):
            _, client = engine.load_checkpoint(str(folder.parent), tag=folder.name, load_optimizer_states=True,
                                               load_lr_scheduler_states=True)
        if client is None:
            raise TrainingError(f"{folder}: checkpoint could not be loaded")
    else:
        try:
            reshard.check_supported(saved["zero_stage"], cfg.train.zero_stage,
                                    saved.get("optimizer", cfg.train.optimizer), str(folder))
            client = reshard.load(engine, folder, scheduler)
        except reshard.ReshardError as exc:
            raise TrainingError(str(exc)) from None
        if rank == 0:
            log.info("resharded %s: %s processes, ZeRO-%s -> %d processes, ZeRO-%d", folder,
                     saved.get("world_size"), saved["zero_stage"], world, cfg.train.zero_stage)
    ranks = client["ranks"]
    if rank < len(ranks):
        set_rng_state(ranks[rank]["rng"])
    else:
        seed_everything(cfg.train.seed + rank + 7919 * client.get("step", 0))
    return client


def data_position(client: dict) -> dict:
    """The global data position of a checkpoint (older ones kept a per-rank stream position)."""
    if "data" in client:
        return client["data"]
    consumed = sum(r["stream"]["consumed"] for r in client["ranks"])
    return {"consumed": consumed, "counts": [consumed]}


def _grad_norm(engine, pre_step_norm: float) -> float:
    """The step's gradient norm: DeepSpeed's (ZeRO-1/2/3, bf16/fp16 optimizers), else ours (ZeRO-0)."""
    norm = engine.get_global_grad_norm()
    return float(pre_step_norm if norm is None else norm)


def _check_run_identity(cfg: RunConfig, objective, run_dir: Path, rank: int) -> None:
    """Stop with one line if an existing run was trained with other data, vocabulary, size or model."""
    from pretrain.runinfo import check_identity, identity, write_identity

    try:
        ident = {**identity(cfg), "vocab_size": len(objective.tokenizer)}   # reads the pipeline config too
        check_identity(run_dir, ident)
    except ConfigError as exc:
        raise TrainingError(str(exc)) from None
    dist.barrier()                        # every rank has checked before rank 0 writes
    if rank == 0:
        write_identity(run_dir, ident)


def export(engine, objective, cfg: RunConfig, ckpt_dir: Path, step: int, rank: int, schedule=None) -> None:
    """Write RUN/export as a Hugging Face folder of fp32 weights.

    ZeRO-3 shards, and the fp32 master weights of bf16/fp16 runs under ZeRO-1/2, are
    consolidated from the checkpoint first (DeepSpeed's zero_to_fp32); bf16 under ZeRO-0
    exports its masters (``pretrain.master_weights``).
    """
    from pretrain.export import master_weights_in_optimizer, write_export

    if master_weights_in_optimizer(cfg.train.zero_stage, cfg.train.precision):
        export_checkpoint(objective, cfg, ckpt_dir, ckpt.tag_for(step), step, rank, schedule)
        return
    if rank == 0:
        master = getattr(engine.optimizer, "master", None)         # bf16 at ZeRO-0: the fp32 masters
        state = {k: (master(v) if master is not None and isinstance(v, torch.nn.Parameter) and v.requires_grad
                     else v).detach().float().cpu() for k, v in engine.module.state_dict(keep_vars=True).items()}
        write_export(objective, cfg, state, step, Path(cfg.run_dir) / "export", schedule)
    dist.barrier()


def export_checkpoint(objective, cfg: RunConfig, ckpt_dir: Path, tag: str, step: int, rank: int, schedule=None) -> None:
    """RUN/export from a saved checkpoint (rank 0 writes; every rank waits)."""
    from pretrain.export import checkpoint_state, write_export

    dist.barrier()
    if rank == 0:
        state = checkpoint_state(ckpt_dir, tag, cfg.train.zero_stage, cfg.train.precision)
        write_export(objective, cfg, state, step, Path(cfg.run_dir) / "export", schedule)
    dist.barrier()


def _export_step(run_dir: Path) -> int | None:
    from pretrain.export import export_step
    return export_step(run_dir / "export")


def _saved_steps(run_dir: Path) -> int | None:
    """train.steps of the run's previous launch (RUN/config.yaml), if any."""
    try:
        return load_run_config(run_dir).train.steps
    except (ConfigError, OSError):
        return None


def _lr_at(cfg: RunConfig, steps: int, step: int) -> float:
    """The learning rate the schedule would give at ``step`` if train.steps were ``steps``."""
    import dataclasses

    from pretrain.engine import lr_lambda
    old = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
    return cfg.train.lr * lr_lambda(old)(step - 1)


class RunLock:
    """An exclusive ``flock`` on RUN/.lock, held by rank 0 for the life of the run.

    The kernel drops it when the process dies (kill -9, node failure, SLURM requeue), so a
    crashed run never blocks the next one; a second live run on the same RUN is refused.
    """

    def __init__(self, run_dir: Path):
        import fcntl

        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ".lock"
        self.fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise TrainingError(f"{run_dir} is in use by a running training ({holder}); wait for it to finish, "
                                f"stop it, or use another RUN") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def together(fn, active: bool, world: int):
    """Run fn where ``active``; if it fails on any rank, every rank stops (no rank left waiting at a
    barrier): the failing ranks with their own one-line error, the others with a short one."""
    result, error = None, None
    if active:
        try:
            result = fn()
        except (TrainingError, DataError, ConfigError) as exc:
            error = exc
    flag = torch.tensor([0 if error else 1])
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if error is not None:
        raise error
    if flag.item() == 0:
        raise TrainingError("stopped: another process failed (see its error)")
    return result


def hold_run_lock(run_dir: Path, rank: int, world: int) -> RunLock | None:
    """Rank 0 takes the RUN lock; every rank stops if it is held."""
    return together(lambda: RunLock(run_dir), rank == 0, world)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="model YAML, e.g. configs/t5-pegasus.yaml")
    parser.add_argument("--size", default=None, help="size preset (tiny|small|base)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=50")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # torchrun starts its workers in sessions of their own, so `kill -9` of make's process group
    # stops torchrun but not them: each worker asks for SIGTERM when its parent dies (a checkpoint).
    from pretrain.launch import die_with_parent
    die_with_parent()
    logging.basicConfig(level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "apache_beam"):   # Beam: its import-time notices
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from pretrain.stages import resolve
        cfg = load_config(args.config, args.overrides, size=args.size)
        from pretrain.engine import check_precision
        check_precision(cfg)
        cfg = resolve(cfg)
        return train(cfg, args.config)
    except (ConfigError, DataError, TrainingError, ckpt.CheckpointError) as exc:
        if int(os.environ.get("RANK", "0")) == 0:    # one line, from one process
            print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
