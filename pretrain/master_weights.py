"""bf16 weights in the model, fp32 master weights and optimizer state here (ZeRO-0, ``train.precision=bf16``).

DeepSpeed's own ZeRO-0 bf16 path wraps the optimizer in ``FP16_UnfusedOptimizer``. Around every
step it scans each gradient for overflow (amax and amin), takes a norm per tensor, casts each
gradient into a freshly allocated fp32 tensor and multiplies it by the loss scale of 1; this
class's norm + step is 1.5x faster for T5-small on CPU, bit for bit the same
(``bench/master_weights_bench.py``, BENCHMARKS.md). The trainer already takes the
gradient norm once for its finite check (``train.clip_and_norm``), so a step here is: copy the
gradients into fp32 buffers that live as long as the optimizer (the trainer takes its norm of, and
clips, these copies), step the fp32 optimizer, copy the weights back into the model.

Gradient accumulation and the all-reduce happen in fp32 as well, as Megatron-LM does for bf16
(``accumulate_allreduce_grads_in_fp32``): between micro-batches the trainer calls ``accumulate``,
which adds the bf16 gradients into the fp32 buffers, and with several processes ``gradients``
averages those buffers over them in one all-reduce (DeepSpeed's own ZeRO-0 all-reduce of the bf16
gradients is switched off, ``engine.build_engine``). Summing 4 micro-batches in bf16 would round
each partial sum to 8 bits of mantissa.

The masters are the model's weights before the cast to bf16, so a run started from an fp32
checkpoint keeps every bit of it. A parameter without a gradient is skipped, as torch's
optimizers skip it in fp32 (DeepSpeed's wrapper stepped it with a zero gradient).
The state dict has DeepSpeed's wrapper's layout (``optimizer_state_dict`` and ``fp32_groups``),
so a checkpoint of either loads into the other, plus the parameters' names, by which the export
reads the masters (``with_masters``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
    """Cast every floating-point parameter (not the buffers), as DeepSpeed's bf16 mode does."""
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)


class MasterWeights(torch.optim.Optimizer):
    """Steps ``build(fp32 groups)`` on fp32 copies of ``groups``' parameters; the model sees bf16.

    Build it over the fp32 model, then cast the model (``cast_parameters``). Torch's lr
    schedulers drive it like any optimizer: ``param_groups`` are the inner optimizer's.
    """

    def __init__(self, groups: list[dict], build: Callable[[list[dict]], torch.optim.Optimizer],
                 names: list[list[str]] | None = None):
        # Optimizer.__init__ is not called: every method the trainer, DeepSpeed and the schedulers use is here.
        self.param_names = names           # saved with the masters: what an export reads them by
        self.bit16_groups = [list(g["params"]) for g in groups]
        self.fp32_groups = [[p.detach().to(torch.float32, copy=True).requires_grad_(True) for p in params]
                            for params in self.bit16_groups]
        self.optimizer = build([{**g, "params": masters} for g, masters in zip(groups, self.fp32_groups)])
        self.defaults = self.optimizer.defaults
        self.world = 1                       # processes to average over (set by engine.build_engine)
        self._copied = False                 # this step's gradients are in the buffers, reduced
        self._micro = 0                      # micro-batches added into the buffers since the last step
        self._live: set[int] = set()         # which parameters got a gradient in them
        self._pairs = [(p, m) for ps, ms in zip(self.bit16_groups, self.fp32_groups) for p, m in zip(ps, ms)]
        self._master = {p: m for p, m in self._pairs}
        # One flat fp32 buffer, each master's gradient a view of it: one all-reduce, one clear
        sizes = [m.numel() for _, m in self._pairs]
        device = self._pairs[0][1].device if self._pairs else None
        self._flat = torch.empty(sum(sizes), dtype=torch.float32, device=device)
        self._views = [v.view_as(m) for v, (_, m) in zip(torch.split(self._flat, sizes), self._pairs)] if sizes else []

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optimizer.param_groups = value

    @property
    def state(self):
        return self.optimizer.state

    def master(self, p: torch.Tensor) -> torch.Tensor:
        """The fp32 master of model parameter ``p``."""
        return self._master[p]

    def _take(self) -> None:
        """Add the model's gradients into the fp32 buffers (a step's first micro-batch copies them)."""
        have = [i for i, (p, _) in enumerate(self._pairs) if p.grad is not None]
        if self._micro == 0:
            if len(have) < len(self._pairs):
                self._flat.zero_()
            self._live = set()
        if have:
            views, grads = [self._views[i] for i in have], [self._pairs[i][0].grad for i in have]
            (torch._foreach_copy_ if self._micro == 0 else torch._foreach_add_)(views, grads)
        self._live.update(have)
        self._micro += 1

    @torch.no_grad()
    def accumulate(self) -> None:
        """Between the micro-batches of one step: move their gradients into the fp32 buffers."""
        self._take()
        for p, _ in self._pairs:
            p.grad = None

    def gradients(self) -> list[torch.Tensor]:
        """This step's gradients in fp32 (accumulated micro-batches, averaged over processes), in
        buffers that live as long as the optimizer: what the trainer takes the norm of and clips
        (``train.clip_and_norm``) and what ``step`` uses. A parameter without a gradient is not
        stepped; with several processes each one is, as DeepSpeed's all-reduce gives it zeros."""
        if not self._copied:
            with torch.no_grad():
                self._take()
                if self.world > 1:
                    dist.all_reduce(self._flat)
                    self._flat.div_(self.world)
                    self._live = set(range(len(self._pairs)))
            for i, (_, m) in enumerate(self._pairs):
                m.grad = self._views[i] if i in self._live else None
            self._copied = True
        return [m.grad for _, m in self._pairs if m.grad is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p, _ in self._pairs:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()
        self._copied = False                 # the next step copies the (cleared) gradients again
        self._micro = 0

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MasterWeights.step takes no closure")
        self.gradients()
        # the trainer's device-side skip flag (train.finite_check), for the fp32 optimizer to read
        self.optimizer.found_inf = getattr(self, "found_inf", None)
        self.optimizer.step()
        stepped = [(p, m) for p, m in self._pairs if m.grad is not None]
        if stepped:
            torch._foreach_copy_([p.data for p, _ in stepped], [m for _, m in stepped])
        self._copied = False
        self._micro = 0

    def state_dict(self) -> dict:
        state = {"optimizer_state_dict": self.optimizer.state_dict(), "fp32_groups": self.fp32_groups,
                 "dynamic_loss_scale": False, "cur_scale": 1.0, "cur_iter": 0}
        if self.param_names is not None:
            state["param_names"] = self.param_names
        return state

    def load_state_dict(self, state_dict: dict, load_optimizer_states: bool = True) -> None:
        if load_optimizer_states:
            self.optimizer.load_state_dict(state_dict["optimizer_state_dict"])
        saved = [m for group in state_dict["fp32_groups"] for m in group]
        if len(saved) != len(self._pairs):
            raise ValueError(f"the checkpoint has {len(saved)} master weights, this model {len(self._pairs)}")
        with torch.no_grad():
            for (p, m), value in zip(self._pairs, saved):
                m.copy_(value)
                p.copy_(m)

    def __repr__(self) -> str:
        return f"MasterWeights({self.optimizer!r})"


def with_masters(weights: dict, saved_optimizer) -> dict:
    """A ZeRO-0 model-states file's module weights with each parameter's fp32 master in place of
    its bf16 value, tied names included (they share storage in the file). Unchanged when the
    optimizer state holds no named masters (fp32, amp-bf16, or a checkpoint of DeepSpeed's wrapper)."""
    if not isinstance(saved_optimizer, dict) or "param_names" not in saved_optimizer:
        return weights

    def where(t: torch.Tensor) -> tuple:
        return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)

    aliases: dict = {}
    for key, value in weights.items():
        if torch.is_tensor(value):
            aliases.setdefault(where(value), []).append(key)
    out = dict(weights)
    for names, masters in zip(saved_optimizer["param_names"], saved_optimizer["fp32_groups"]):
        for name, master in zip(names, masters):
            for key in aliases.get(where(weights[name]), [name]):
                out[key] = master.detach()
    return out
