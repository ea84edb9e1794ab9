"""``pretrain.train`` with every host read of a tensor recorded while a training step runs.

A GPU step must not wait for the device outside log steps (#24): no ``.item()``, ``bool()``,
``tolist()``, ``nonzero()`` or boolean-mask selection between a batch reaching the device and
the end of its optimizer step. On a CPU those reads cost nothing, so the trainer's CPU-only
shortcuts take some; this probe runs the CUDA code paths instead (``train.finite_check=log``,
the LM loss's row handling off the CPU, the CPU attention and flattening off) and writes what it
caught, with where, to OUT (JSON list; empty = none).

    python tests/sync_probe.py OUT -- <pretrain.train arguments> [--through-step]

``--through-step`` ends the window at each ``engine.step()`` instead of ``DeviceChecks``' end of
step, for runs with the host checks (``train.finite_check=step``, ZeRO-1/2/3).
"""
from __future__ import annotations

import functools
import json
import sys
import traceback

import torch

import pretrain.lm_loss as lm_loss
import pretrain.train as trainer

out_path, args = sys.argv[1], sys.argv[3:]
lm_loss.index_free = lambda device: True                  # the rows as off the CPU
armed, caught = [False], []


def record(what: str) -> None:
    if armed[0]:
        frames = [f for f in traceback.extract_stack()[:-2] if "sync_probe" not in f.filename][-3:]
        caught.append(f"{what}: " + " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in reversed(frames)))


def watch(attr: str) -> None:
    original = getattr(torch.Tensor, attr)

    @functools.wraps(original)
    def wrapper(self, *a, **k):
        record(attr)
        return original(self, *a, **k)
    setattr(torch.Tensor, attr, wrapper)


for name in ("item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "nonzero", "cpu"):
    watch(name)
_getitem = torch.Tensor.__getitem__


def getitem(self, index):
    parts = index if isinstance(index, tuple) else (index,)
    if any(torch.is_tensor(p) and p.dtype == torch.bool for p in parts):
        record("boolean-mask index")
    return _getitem(self, index)


torch.Tensor.__getitem__ = getitem
_to_device, _end_step = trainer.to_device, trainer.DeviceChecks.end_step


def to_device(*a, **k):                                   # a training micro-batch reaches the device: from here
    batch = _to_device(*a, **k)
    armed[0] = armed[0] or "non_blocking" in k            # (the training loop's call; evaluation's has none)
    return batch


def end_step(self):                                       # ... to the end of its optimizer step
    _end_step(self)
    armed[0] = False


_iter = trainer.TrainData.__iter__


def batches(self):                                        # making the next CPU batch (and counting its
    source = _iter(self)                                  # tokens on the host) is not part of a step
    while True:
        armed[0] = False
        try:
            item = next(source)
        except StopIteration:
            return
        yield item


trainer.to_device, trainer.DeviceChecks.end_step, trainer.TrainData.__iter__ = to_device, end_step, batches
if "--through-step" in args:             # with the host checks (ZeRO-1/2/3): up to the end of each engine.step()
    from deepspeed.runtime.engine import DeepSpeedEngine

    args.remove("--through-step")
    _engine_step = DeepSpeedEngine.step

    def engine_step(self, *a, **k):
        out = _engine_step(self, *a, **k)
        armed[0] = False
        return out
    DeepSpeedEngine.step = engine_step
try:
    code = trainer.main(args)
finally:
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(caught, f, indent=1)
sys.exit(code)
