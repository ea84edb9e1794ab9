"""What an elastic resume starts from, against DeepSpeed's own loader.

Run under torchrun by tests/test_elastic.py, twice:

    reshard_check.py native  REF.pt CONFIG CHECKPOINT key=value ...   (the checkpoint's own layout)
    reshard_check.py reshard REF.pt CONFIG CHECKPOINT key=value ...   (another world size / ZeRO stage)

``native`` loads the checkpoint with ``engine.load_checkpoint`` and saves every parameter's fp32
value and optimizer state (DeepSpeed's fragment API), the optimizer step and learning rate to
REF.pt; ``reshard`` loads it with ``pretrain.reshard`` and prints one JSON line per rank with the
largest difference from REF.pt.
"""
import json
import sys
from pathlib import Path

import torch


def full_state(engine, scheduler) -> dict:
    """{name: {"param": fp32, state key: tensor}} plus the optimizer step and learning rate."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    out = {}
    link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)   # after a load, before a step
    if link is not None:
        link()
    for name, p in engine.module.named_parameters():
        if hasattr(p, "_hp_mapping") or hasattr(p, "ds_id"):
            out[name] = {"param": safe_get_full_fp32_param(p).float().cpu().clone()}
            for key in ("exp_avg", "exp_avg_sq"):
                out[name][key] = safe_get_full_optimizer_state(p, key).float().cpu().clone()
        else:
            p = engine.optimizer.master(p) if hasattr(engine.optimizer, "master") else p   # bf16: its fp32 master
            state = engine.optimizer.state[p]
            out[name] = {"param": p.detach().float().cpu().clone(),
                         **{k: state[k].float().cpu().clone() for k in ("exp_avg", "exp_avg_sq")}}
    base = getattr(engine.optimizer, "optimizer", engine.optimizer)
    steps = sorted({float(s["step"]) for s in base.state.values() if "step" in s})
    return {"values": out, "steps": steps, "lr": scheduler.get_last_lr(), "engine_steps": engine.global_steps}


def main(mode: str, ref: str, config: str, folder: str, overrides: list[str]) -> None:
    from pretrain import checkpoint as ckpt, reshard
    from pretrain.config import load_config
    from pretrain.engine import build_engine, init_distributed
    from pretrain.stages import resolve

    rank, world, _ = init_distributed()
    cfg = resolve(load_config(config, overrides))
    engine, _, scheduler = build_engine(cfg, cfg.objective_class(cfg).build_model())
    folder = Path(folder)
    if mode == "native":
        with ckpt.safe_loads(folder):
            engine.load_checkpoint(str(folder.parent), tag=folder.name)
        state = full_state(engine, scheduler)
        if rank == 0:
            torch.save(state, ref)
        return
    reshard.load(engine, folder, scheduler)
    got, want = full_state(engine, scheduler), torch.load(ref, weights_only=True)
    worst = max((a - want["values"][name][k]).abs().max().item()
                for name, values in got["values"].items() for k, a in values.items())
    print(json.dumps({"rank": rank, "world": world, "worst": worst,
                      "compared": sum(len(v) for v in got["values"].values()),
                      "same_steps": got["steps"] == want["steps"] and got["engine_steps"] == want["engine_steps"],
                      "same_lr": got["lr"] == want["lr"]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    sys.exit(0)
