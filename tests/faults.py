"""A test-only objective: T5-PEGASUS whose loss or gradient turns non-finite at chosen micro-batches.

The trainer's robustness paths (skip, count, stop) are exercised through the real engine
without any hook in the trainer: a run names ``objective.name=tests.faults:FaultyT5`` and
``objective.faults=loss@3,grad@6`` (the 3rd training micro-batch's loss is NaN, the 6th's
gradient infinite).
"""
from __future__ import annotations

import dataclasses

import torch

from pretrain.objectives.base import Options
from pretrain.objectives.t5_pegasus import T5PegasusObjective


@dataclasses.dataclass
class FaultOptions(Options):
    faults: str = ""


class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class FaultyT5(T5PegasusObjective):
    spec = dataclasses.replace(T5PegasusObjective.spec, name="faulty-t5", options=FaultOptions)

    def __init__(self, cfg, tokenizer=None):
        super().__init__(cfg, tokenizer)
        self.faults = {int(n): kind for kind, _, n in (f.partition("@") for f in cfg.objective.faults.split(",") if f)}
        self.calls = 0

    def loss(self, model, batch):
        loss, terms = super().loss(model, batch)
        if not model.training:
            return loss, terms
        self.calls += 1
        kind = self.faults.get(self.calls)
        if kind == "loss":
            loss = loss * float("nan")
        elif kind == "grad":
            loss = _InfGrad.apply(loss)
        return loss, terms
