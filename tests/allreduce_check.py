"""ZeRO-0's gradient all-reduce: skipped in a world of one, kept (and averaging) in a larger one.

Run by tests/test_robustness.py, as ``python tests/allreduce_check.py`` and under torchrun with
two processes. Each rank backpropagates its own batch through ``build_engine``'s engine and
prints one JSON line: whether the engine all-reduces, and the largest difference between its
gradients and the mean of every rank's gradients computed locally on a copy of the model.
"""
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from pretrain.config import config_path, load_config
    from pretrain.engine import build_engine, init_distributed

    rank, world, _ = init_distributed()
    cfg = load_config(config_path("t5-pegasus"), ["train.zero_stage=0", "train.precision=fp32"])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ref = copy.deepcopy(model)
    engine, _, _ = build_engine(cfg, model)
    xs = [torch.randn(4, 8, generator=torch.Generator().manual_seed(r)) for r in range(world)]
    engine.backward(engine(xs[rank]).pow(2).mean())
    grads = []
    for x in xs:
        ref.zero_grad()
        ref(x).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in ref.parameters()])
    want = [sum(g) / world for g in zip(*grads)]
    err = max((p.grad - w).abs().max().item() for p, w in zip(engine.module.parameters(), want))
    print(json.dumps({"rank": rank, "world": world, "allreduce": engine.enable_backward_allreduce, "err": err}),
          flush=True)
    import torch.distributed as dist
    dist.barrier()                 # no rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
