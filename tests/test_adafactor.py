"""``pretrain.adafactor.Adafactor`` steps exactly as Hugging Face's Adafactor, with fewer passes."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers.optimization import Adafactor as HFAdafactor

from pretrain.adafactor import Adafactor

# every kind of parameter: factored (2D and with a leading dim), unfactored (1D), one bf16 weight
SHAPES = [(48, 32), (3, 16, 24), (32,), (7,)]


def params(seed: int = 0, bf16: bool = False) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    out = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]
    if bf16:
        out.append(torch.nn.Parameter(torch.randn(20, 12, generator=g).bfloat16()))
    return out


def groups(ps, weight_decay: float) -> list[dict]:
    return [{"params": ps[:2] + ps[4:], "weight_decay": weight_decay}, {"params": ps[2:4], "weight_decay": 0.0}]


def hf(ps, **kw):
    return HFAdafactor(ps, scale_parameter=False, relative_step=False, warmup_init=False, **kw)


def set_grads(ps, step: int) -> None:
    """Gradients whose scale jumps (x100, then x0.01): the update's RMS goes over the clip
    threshold on some steps and stays under it on others, so both branches of the clip run."""
    g = torch.Generator().manual_seed(100 + step)
    scale = (1.0, 100.0, 0.01, 1.0, 30.0, 1.0)[step % 6]
    for p in ps:
        grad = torch.randn(p.shape, generator=g) * scale
        if grad.dim() >= 2:
            grad[..., 0, :] = 0.0        # a row with no gradient (an embedding row no batch used): eps matters
        p.grad = grad.to(p.dtype)


def twins(kw: dict, first) -> tuple:
    """The same parameters twice (a, b), a under ``first(...)``, b under ours, with ``kw``."""
    kw = dict(kw)
    wd = kw.pop("weight_decay", 0.0)
    a, b = params(bf16=True), params(bf16=True)
    return a, b, first(groups(a, wd), **kw), Adafactor(groups(b, wd), **kw)


@pytest.mark.parametrize("kw", [dict(lr=1e-2), dict(lr=3e-3, weight_decay=0.1), dict(lr=1e-2, beta1=0.9)],
                         ids=["plain", "weight-decay", "first-moment"])
def test_steps_bit_for_bit_as_hugging_face(kw):
    a, b, ref, ours = twins(kw, hf)
    for step in range(12):
        set_grads(a, step)
        set_grads(b, step)
        ref.step()
        ours.step()
        for i, (p, q) in enumerate(zip(a, b)):
            assert torch.equal(p, q), f"step {step}, parameter {i} {tuple(p.shape)} differs from HF's"
        for key in ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq", "exp_avg"):
            for p, q in zip(a, b):
                if key in ref.state[p]:
                    assert torch.equal(ref.state[p][key], ours.state[q][key]), key
    assert ours.state[b[0]]["step"] == 12 and "RMS" not in ours.state[b[0]]


def test_update_clipping_runs_both_ways():
    """The skipped division (x / 1 == x) must not skip a real clip: with gradients that jump, HF's
    clip divisor is above 1 on some steps and exactly 1 on others, and both optimizers agree."""
    a, b = params(), params()
    ref, ours = hf(a, lr=1e-2), Adafactor(b, lr=1e-2)
    divisors = []
    for step in range(6):
        set_grads(a, step)
        set_grads(b, step)
        ref.step()
        ours.step()
        st = ref.state[a[0]]
        r = (st["exp_avg_sq_row"] / st["exp_avg_sq_row"].mean(-1, keepdim=True)).rsqrt().unsqueeze(-1)
        u = r * st["exp_avg_sq_col"].unsqueeze(-2).rsqrt() * a[0].grad
        divisors.append(max(1.0, (u.norm(2) / u.numel() ** 0.5).item()))
        assert all(torch.equal(p, q) for p, q in zip(a, b)), f"step {step}"
    assert any(d > 1.0 for d in divisors) and any(d == 1.0 for d in divisors), divisors


def test_state_dicts_load_across_both_implementations():
    """A checkpoint of either optimizer resumes in the other and continues identically (HF's extra
    ``RMS`` entry is dropped on the next step)."""
    a, b = params(), params()
    ref, ours = hf(a, lr=1e-2), Adafactor(b, lr=1e-2)
    for step in range(3):
        set_grads(a, step)
        set_grads(b, step)
        ref.step()
        ours.step()
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    ours_from_hf, hf_from_ours = Adafactor(a2, lr=1e-2), hf(b2, lr=1e-2)
    ours_from_hf.load_state_dict(copy.deepcopy(ref.state_dict()))     # as from a checkpoint: no shared tensors
    hf_from_ours.load_state_dict(copy.deepcopy(ours.state_dict()))
    for step in range(3, 6):
        for ps in (a, b, a2, b2):
            set_grads(ps, step)
        for opt in (ref, ours, ours_from_hf, hf_from_ours):
            opt.step()
    for ps in (b, a2, b2):
        assert all(torch.equal(p, q) for p, q in zip(a, ps))


def test_refuses_a_relative_step_group():
    p = params()
    opt = Adafactor(p, lr=1e-2)
    opt.param_groups[0]["relative_step"] = True
    set_grads(p, 0)
    with pytest.raises(ValueError, match="external learning rate"):
        opt.step()


@pytest.mark.parametrize("kw", [dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, beta1=0.9)], ids=["weight-decay", "first-moment"])
def test_found_inf_skips_on_the_device_and_changes_no_bit_otherwise(kw):
    """The trainer's ``train.finite_check=log`` hands a device flag: 0 steps exactly as without it,
    1 leaves weights and statistics as they were (non-finite gradients included)."""
    a, b, plain, flagged = twins(kw, Adafactor)
    for step in range(6):
        set_grads(a, step)
        set_grads(b, step)
        if step == 3:                        # a bad step: only the flagged one takes it
            before = [q.detach().clone() for q in b]
            state = copy.deepcopy(flagged.state)
            for q in b:
                q.grad[..., 0] = float("nan")
            flagged.found_inf = torch.ones(())
            flagged.step()
            assert all(torch.equal(q, w) for q, w in zip(b, before))
            for q in b:
                for key, value in state[q].items():
                    if torch.is_tensor(value):
                        assert torch.equal(flagged.state[q][key], value), key
            for p in a:                      # the flagged one's step count moved: the plain one's too
                plain.state[p]["step"] += 1
            continue
        flagged.found_inf = torch.zeros(())
        plain.step()
        flagged.step()
        for i, (p, q) in enumerate(zip(a, b)):
            assert torch.equal(p, q), f"step {step}, parameter {i}"
