"""Adafactor (the T5 recipe's optimizer) with Hugging Face's exact arithmetic, in fewer passes.

``transformers.optimization.Adafactor`` makes about eleven full passes over each weight per
step. Three of them produce nothing that is used: the parameter's RMS (read only with
``scale_parameter``), the negation in ``p + (-u)``, and the division by the clip divisor when
that divisor is exactly 1 (``x / 1 == x``; on a CPU reading it back costs nothing, on CUDA it
would be a host sync, so there the division always runs). The outer product of the row and
column factors is also written into the squared-gradient buffer instead of a new one.
Everything else is HF's ops in HF's order, per parameter (a parameter's temporaries stay in
cache between its ops; ``torch._foreach_*`` over all parameters measured slower on CPU). So the
parameters and state come out bit for bit as HF's (``tests/test_adafactor.py``), and the state
dicts load into either class. The optimizer step of a T5-small preset is 1.44x faster
(``bench/optimizer_bench.py``, BENCHMARKS.md).

Only the options the T5 recipe uses are taken: an external learning rate (``relative_step``,
``scale_parameter`` and ``warmup_init`` off). Like torch's fused AdamW, a step reads ``found_inf``
(the trainer's device-side skip flag, ``train.finite_check=log``) without a host sync.
"""
from __future__ import annotations

import math

import torch
from transformers.optimization import Adafactor as HFAdafactor

HALF = (torch.float16, torch.bfloat16)


class Adafactor(HFAdafactor):
    def __init__(self, params, lr: float, eps=(1e-30, 1e-3), clip_threshold: float = 1.0, decay_rate: float = -0.8,
                 beta1: float | None = None, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, eps=eps, clip_threshold=clip_threshold, decay_rate=decay_rate, beta1=beta1,
                         weight_decay=weight_decay, scale_parameter=False, relative_step=False, warmup_init=False)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # ``found_inf`` (set by the trainer, as torch's GradScaler sets it for fused AdamW): a device
        # flag, nonzero where this step's gradients are not finite; the step then leaves the weights
        # and the moment statistics as they were, without reading the flag on the host
        found = getattr(self, "found_inf", None)
        found = None if found is None else found.reshape(()).bool()
        for group in self.param_groups:
            if group["scale_parameter"] or group["relative_step"]:
                raise ValueError("pretrain.adafactor.Adafactor takes an external learning rate only "
                                 "(scale_parameter and relative_step off)")
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients.")
                self._update(p, group, found)
        return loss

    def _state(self, p, grad, factored: bool, first_moment: bool) -> dict:
        """HF's state, created as HF creates it; ``RMS`` (read only with ``scale_parameter``) is dropped."""
        state = self.state[p]
        shape = grad.shape
        if not state:
            state["step"] = 0
            if first_moment:
                state["exp_avg"] = torch.zeros_like(grad)
            if factored:
                state["exp_avg_sq_row"] = torch.zeros(shape[:-1]).to(grad)
                state["exp_avg_sq_col"] = torch.zeros(shape[:-2] + shape[-1:]).to(grad)
            else:
                state["exp_avg_sq"] = torch.zeros_like(grad)
        else:
            for key in ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq"):
                if key in state and (state[key].dtype != grad.dtype or state[key].device != grad.device):
                    state[key] = state[key].to(grad)
        state.pop("RMS", None)
        state["step"] += 1
        return state

    def _update(self, p: torch.Tensor, group: dict, found: torch.Tensor | None = None) -> None:
        """HF's update of one parameter, op for op, less the passes whose result is not used. With
        ``found`` set, the statistics and the weight keep their values (the step count still moves)."""
        grad = p.grad.float() if p.grad.dtype in HALF else p.grad
        factored, first_moment = self._get_options(group, grad.shape)
        state = self._state(p, grad, factored, first_moment)
        lr = group["lr"]
        beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])
        kept = None if found is None else {k: state[k].clone() for k in ("exp_avg", "exp_avg_sq_row",
                                                                          "exp_avg_sq_col", "exp_avg_sq") if k in state}
        update = torch.mul(grad, grad).add_(group["eps"][0])          # grad ** 2 + eps
        if factored:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
            col.mul_(beta2t).add_(update.mean(dim=-2), alpha=1.0 - beta2t)
            r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
            torch.mul(r_factor, col.unsqueeze(-2).rsqrt(), out=update)     # HF's _approx_sq_grad, in place
            update.mul_(grad)
        else:
            sq = state["exp_avg_sq"]
            sq.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
            torch.rsqrt(sq, out=update).mul_(grad)
        clip = (update.norm(2) / (update.numel() ** 0.5) / group["clip_threshold"]).clamp_(min=1.0)
        if update.is_cuda or clip.item() != 1.0:       # x / 1 == x: on the CPU (no sync to wait for) skip the pass
            update.div_(clip)
        update.mul_(lr)
        if first_moment:
            avg = state["exp_avg"]
            avg.mul_(group["beta1"]).add_(update, alpha=1 - group["beta1"])
            update = avg
        if found is not None:
            for k, old in kept.items():
                torch.where(found, old, state[k], out=state[k])
            # in place, except where ``update`` is the first moment's state itself (restored above)
            update = update.masked_fill(found, 0.0) if first_moment else update.masked_fill_(found, 0.0)
        data = p.float() if p.dtype in HALF else p
        if group["weight_decay"] != 0:
            data.add_(data if found is None else data.masked_fill(found, 0.0), alpha=-group["weight_decay"] * lr)
        data.sub_(update)
        if data is not p:
            p.copy_(data)
