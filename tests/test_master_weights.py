"""bf16 weights with fp32 masters (pretrain.master_weights): the same arithmetic as an fp32
optimizer stepping on the bf16 gradients, bit for bit, clipping included."""
import copy
import io

import pytest
import torch

from pretrain.adafactor import Adafactor
from pretrain.master_weights import MasterWeights, cast_parameters


def model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.LayerNorm(40), torch.nn.Linear(40, 16))
    net.register_parameter("unused", torch.nn.Parameter(torch.randn(8, 8)))   # never gets a gradient
    return net


def groups(net):
    decay = [p for n, p in net.named_parameters() if p.dim() >= 2]
    return [{"params": decay, "weight_decay": 0.1}, {"params": [p for p in net.parameters() if p.dim() < 2],
                                                    "weight_decay": 0.0}]


OPTIMIZERS = {
    "adamw": lambda g: torch.optim.AdamW(g, lr=1e-2, fused=True),
    "adafactor": lambda g: Adafactor(g, lr=1e-2),
}


def bf16_grads(step, net):
    gen = torch.Generator().manual_seed(step)
    scale = 10.0 if step % 3 == 0 else 0.01         # some steps clip, some do not
    return {n: (torch.randn(p.shape, generator=gen) * scale).bfloat16()
            for n, p in net.named_parameters() if n != "unused"}


def step_both_and_compare(ref, opt, ref_net, net, step):
    """Step the fp32 reference and MasterWeights; the masters must equal the reference's weights
    and the model's bf16 weights their rounding, bit for bit."""
    ref.step()
    opt.step()
    ref.zero_grad()
    opt.zero_grad()
    for (n, p), q in zip(ref_net.named_parameters(), net.parameters()):
        assert torch.equal(opt.master(q), p.detach()), (step, n)
        assert torch.equal(q.detach(), p.detach().bfloat16()), (step, n)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_masters_step_as_an_fp32_optimizer_on_the_bf16_gradients(name):
    ref_net, net = model(), model()
    ref = OPTIMIZERS[name](groups(ref_net))
    opt = MasterWeights(groups(net), OPTIMIZERS[name])
    cast_parameters(net)
    assert all(p.dtype == torch.bfloat16 for p in net.parameters())
    unused_before = opt.master(net.unused).clone()
    clipped = 0
    for step in range(8):
        grads = bf16_grads(step, net)
        for (n, p), (_, q) in zip(ref_net.named_parameters(), net.named_parameters()):
            if n in grads:
                p.grad, q.grad = grads[n].float(), grads[n].clone()
        in_order = [p for g in groups(ref_net) for p in g["params"]]           # the optimizer's order
        norm = torch.nn.utils.clip_grad_norm_(in_order, 1.0, foreach=True)
        if norm > 1.0:              # what train.clip_and_norm does with max_norm 1, on the fp32 copies
            clip_norm = torch.nn.utils.get_total_norm(opt.gradients())
            assert torch.equal(clip_norm, norm)
            torch._foreach_mul_(opt.gradients(), torch.clamp(1.0 / (clip_norm + 1e-6), max=1.0))
            clipped += 1
        step_both_and_compare(ref, opt, ref_net, net, step)
    assert 0 < clipped < 8
    assert torch.equal(opt.master(net.unused), unused_before) and net.unused not in opt.state


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_saved_state_resumes_bit_for_bit(name):
    def build():
        net = model()
        opt = MasterWeights(groups(net), OPTIMIZERS[name])
        cast_parameters(net)
        return net, opt

    def train(net, opt, steps):
        for step in steps:
            for n, p in net.named_parameters():
                if n != "unused":
                    p.grad = bf16_grads(step, net)[n]
            opt.step()
            opt.zero_grad()

    a, opt_a = build()
    train(a, opt_a, range(3))
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)
    b, opt_b = build()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    opt_b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    train(a, opt_a, range(3, 6))
    train(b, opt_b, range(3, 6))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q) and torch.equal(opt_a.master(p), opt_b.master(q))


def test_the_masters_keep_the_fp32_starting_weights_and_the_schedule_drives_the_inner_optimizer():
    net = model()
    start = net[0].weight.detach().clone()
    opt = MasterWeights(groups(net), OPTIMIZERS["adamw"])
    cast_parameters(net)
    assert torch.equal(opt.master(net[0].weight), start)              # not the bf16 rounding of it
    assert not torch.equal(net[0].weight.float(), start)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    for step in range(3):
        net[0].weight.grad = torch.ones_like(net[0].weight)
        opt.step()
        sched.step()
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** 3)
    assert opt.state_dict()["fp32_groups"][0][0] is opt.master(net.unused)    # DeepSpeed's layout


def test_the_trainers_clip_matches_torch_and_clips_the_fp32_copies_under_master_weights():
    """train.clip_and_norm: torch's clip_grad_norm_ bit for bit on fp32 gradients, nothing touched
    on steps under the limit, the fp32 copies clipped (not the bf16 gradients) under MasterWeights."""
    from types import SimpleNamespace

    from pretrain.train import clip_and_norm

    for scale in (10.0, 0.001):                    # over and under max_norm 1
        net, ref = model(), model()
        for p, q in zip(net.parameters(), ref.parameters()):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * scale
            q.grad = p.grad.clone()
        before = [p.grad.clone() for p in net.parameters()]
        norm = clip_and_norm(SimpleNamespace(module=net, optimizer=torch.optim.SGD(net.parameters())), 1, 1.0)
        want = torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0, foreach=True)
        assert norm == float(want)
        assert all(torch.equal(p.grad, q.grad) for p, q in zip(net.parameters(), ref.parameters()))
        assert (scale > 1) != all(torch.equal(p.grad, b) for p, b in zip(net.parameters(), before))

    net = model()
    opt = MasterWeights(groups(net), OPTIMIZERS["adamw"])
    cast_parameters(net)
    for p in net.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = [p.grad.clone() for p in net.parameters()]
    norm = clip_and_norm(SimpleNamespace(module=net, optimizer=opt), 1, 1.0)
    exact = 3.0 * sum(p.numel() for p in net.parameters()) ** 0.5
    assert norm == pytest.approx(exact, rel=1e-6)                  # fp32, not a bf16 norm
    assert all(torch.equal(p.grad, b) for p, b in zip(net.parameters(), before))     # bf16 untouched
    assert all(torch.allclose(g, torch.full_like(g, 3.0 / norm)) for g in opt.gradients())  # fp32 copies clipped
    opt.step()
    opt.zero_grad(set_to_none=False)
    net[0].weight.grad[0, 0] = float("inf")
    assert clip_and_norm(SimpleNamespace(module=net, optimizer=opt), 1, 1.0) == float("inf")
    opt.zero_grad(set_to_none=False)            # the trainer's answer to a non-finite norm
    assert all(float(g.abs().max()) == 0 for g in opt.gradients())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_micro_batches_accumulate_in_fp32(name):
    """Gradient accumulation adds the bf16 gradients into the fp32 buffers (Megatron-LM's
    accumulate_allreduce_grads_in_fp32), not into bf16 partial sums; a parameter with a gradient
    in any micro-batch is stepped."""
    ref_net, net = model(), model()
    ref = OPTIMIZERS[name](groups(ref_net))
    opt = MasterWeights(groups(net), OPTIMIZERS[name])
    cast_parameters(net)
    for step in range(3):
        micro = [bf16_grads(10 * step + k, net) for k in range(4)]
        if step == 1:
            micro[0]["unused"] = torch.ones(8, 8).bfloat16()     # a gradient in the first micro-batch only
        for k, grads in enumerate(micro):
            for n, q in net.named_parameters():
                if n in grads:
                    q.grad = grads[n].clone()
            if k < len(micro) - 1:
                opt.accumulate()
                assert all(q.grad is None for q in net.parameters())
        for n, p in ref_net.named_parameters():
            parts = [g[n].float() for g in micro if n in g]
            if parts:
                p.grad = parts[0].clone()
                for part in parts[1:]:
                    p.grad += part
        bf16_sum = {n: sum((g[n] for g in micro[1:]), micro[0][n]) for n in micro[0] if n != "unused"}
        fp32 = {n: p.grad for n, p in ref_net.named_parameters() if p.grad is not None}
        assert any(not torch.equal(bf16_sum[n].float(), fp32[n]) for n in bf16_sum)    # bf16 sums would round
        opt.gradients()
        masters = {n: opt.master(q) for n, q in net.named_parameters()}
        for n, want in fp32.items():
            assert torch.equal(masters[n].grad, want), (step, n)
        assert (masters["unused"].grad is not None) == (step == 1)
        step_both_and_compare(ref, opt, ref_net, net, step)


def _average_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    net = model()
    opt = MasterWeights(groups(net), OPTIMIZERS["adamw"])
    cast_parameters(net)
    opt.world = 2
    for k in range(2):                                    # two micro-batches, then the all-reduce
        for n, q in net.named_parameters():
            if n != "unused":
                q.grad = bf16_grads(100 * rank + k, net)[n]
        if k == 0:
            opt.accumulate()
    opt.gradients()
    grads = {n: opt.master(q).grad.clone() for n, q in net.named_parameters()}
    opt.step()
    torch.save({"grads": grads, "masters": {n: opt.master(q).detach().clone() for n, q in net.named_parameters()}},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow           # two spawned processes: ~5 s
def test_processes_average_the_fp32_accumulated_gradients(tmp_path):
    """Several processes: the fp32 sums are averaged in one all-reduce (DeepSpeed's bf16 one is off),
    every parameter is stepped as DeepSpeed's all-reduce gives a missing gradient zeros, and the
    ranks' masters stay equal."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_average_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    net = model()
    for n, _ in net.named_parameters():
        if n == "unused":
            want = torch.zeros(8, 8)
        else:
            sums = [bf16_grads(100 * r, net)[n].float() + bf16_grads(100 * r + 1, net)[n].float() for r in (0, 1)]
            want = (sums[0] + sums[1]) / 2
        assert torch.equal(r0["grads"][n], want) and torch.equal(r1["grads"][n], want), n
        assert torch.equal(r0["masters"][n], r1["masters"][n]), n


_ENGINE_SCRIPT = r"""
import torch
from pretrain.config import config_path, load_config
from pretrain.engine import build_engine, init_distributed
from pretrain.train import backward

init_distributed()
cfg = load_config(config_path("t5-pegasus"), ["train.precision=bf16", "train.zero_stage=0", "train.grad_accum=2",
                                              "train.micro_batch_size=2", "run_dir=/tmp/unused"])
torch.manual_seed(0)
engine, optimizer, _ = build_engine(cfg, torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)))
xs = [torch.randn(2, 8, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(k)) for k in range(2)]
grads = []
for x in xs:                                 # each micro-batch's bf16 gradients, computed apart
    engine.module.zero_grad()
    (engine.module(x).float().pow(2).mean() / 2).backward()
    grads.append([p.grad.clone() for p in engine.module.parameters()])
engine.module.zero_grad()
first = backward(engine, engine(xs[0]).float().pow(2).mean())
assert not first and all(p.grad is None for p in engine.module.parameters()), "not moved into the fp32 buffers"
engine.step()                                # what the trainer does after every micro-batch (no update here)
assert backward(engine, engine(xs[1]).float().pow(2).mean())
optimizer.gradients()
for p, a, b in zip(engine.module.parameters(), *grads):
    assert torch.equal(optimizer.master(p).grad, a.float() + b.float()), "not the fp32 sum"
print("ok")
"""


@pytest.mark.slow        # a DeepSpeed engine in its own process: ~15 s
def test_the_trainers_backward_accumulates_micro_batches_in_fp32_through_a_deepspeed_engine(tmp_path):
    """train.backward on a real ZeRO-0 bf16 engine with grad_accum 2: after the first micro-batch the
    model holds no gradient (it went into the fp32 buffers), and the step's gradients are the fp32
    sum of the two micro-batches' bf16 gradients (DeepSpeed scales each loss by 1/2)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run([sys.executable, "-c", _ENGINE_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
