"""RUN/export: the Hugging Face folder(s) of a run's weights at a step, from memory or from a checkpoint.

Used by the trainer at the end of a run and by ``make release`` (which rebuilds a missing
or stale export from the latest checkpoint). The model is always built with the
architecture of that step (``growth.architecture_at``), so grown runs export too.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from pretrain import checkpoint as ckpt
from pretrain import growth
from pretrain.master_weights import with_masters
from pretrain.objectives.base import load_trained_state

log = logging.getLogger("pretrain")
STEP_FILE = "training_step.json"


def master_weights_in_optimizer(zero_stage: int, precision: str) -> bool:
    """Whether the fp32 weights live only in ZeRO's optimizer partitions (read them with zero_to_fp32).

    ZeRO-3 partitions the parameters themselves; under bf16/fp16, ZeRO-1/2 keep bf16 copies in
    the model and the fp32 master weights in the optimizer state. ZeRO-0 keeps the masters
    inside the model-states file, next to the weights (``checkpoint_state`` reads them there).
    """
    return zero_stage == 3 or (zero_stage in (1, 2) and precision in ("bf16", "fp16"))


def checkpoint_state(ckpt_dir: Path, tag: str, zero_stage: int, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """The trained weights of a checkpoint, fp32, as the trainer's export saw them.

    DeepSpeed's checkpoint files are pickles (optimizer and client state); they are read with
    ``weights_only=True`` (``checkpoint.safe_loads``), and only from the RUN the user names.
    """
    if master_weights_in_optimizer(zero_stage, precision):
        # Gather the fp32 master weights from the optimizer shards (DeepSpeed's zero_to_fp32).
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        with ckpt.safe_loads(ckpt_dir / tag):
            state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    else:
        files = sorted((ckpt_dir / tag).glob("mp_rank_*_model_states.pt"))
        if not files:
            raise ckpt.CheckpointError(f"{ckpt_dir / tag}: no mp_rank_*_model_states.pt")
        state = ckpt.read(files[0])
        state = with_masters(state["module"], state.get("optimizer"))    # bf16 at ZeRO-0: the fp32 masters
    return {k: v.detach().float().cpu() for k, v in state.items() if torch.is_tensor(v)}


def write_export(objective, cfg, state: dict, step: int, out: Path, schedule=None) -> Path:
    """Build the model of ``step``'s architecture, load ``state``, write the export atomically."""
    model = load_trained_state(growth.architecture_at(cfg, objective, step, schedule), state)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    objective.export(model.float().eval(), tmp)
    (tmp / STEP_FILE).write_text(json.dumps({"step": step}), encoding="utf-8")
    replace_folder(tmp, out)
    log.info("exported Hugging Face model to %s (step %d)", out, step)
    return out


def replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` in place of ``out`` (renames, so ``out`` is never half-written)."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def export_step(export: Path) -> int | None:
    try:
        return json.loads((export / STEP_FILE).read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError, KeyError):
        return None
