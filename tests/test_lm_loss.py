"""The fused LM head + cross-entropy (pretrain.lm_loss) and the cheap CPU dropout (pretrain.dropout):
the same loss, gradients and distribution as torch's own path."""
import pytest
import torch
import torch.nn.functional as F

from pretrain import dropout as D
from pretrain import lm_loss


def _reference(h, w, y, autocast):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = F.cross_entropy((h @ w.t()).float(), y, ignore_index=-100)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def _fused(h, w, y, autocast, chunk=lm_loss.CHUNK):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = lm_loss.linear_cross_entropy(h, w, y, chunk)
    (loss * 3).backward()                        # an incoming gradient other than 1 scales both
    return loss.detach(), h.grad / 3, w.grad / 3


def _problem(n=300, d=24, v=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = torch.randn(n, d, generator=g), torch.randn(v, d, generator=g) * 0.3
    y = torch.randint(0, v, (n,), generator=g)
    y[::7] = -100                                # unlabelled positions (pads) count for nothing
    return h, w, y


def test_fused_loss_and_gradients_equal_cross_entropy_in_fp32():
    h, w, y = _problem()
    ref, fused = _reference(h, w, y, False), _fused(h, w, y, False, chunk=64)
    torch.testing.assert_close(fused[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused[1], ref[1], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(fused[2], ref[2], atol=1e-6, rtol=1e-4)


def test_fused_under_bf16_autocast_is_at_least_as_close_to_float64():
    h, w, y = _problem(seed=1)
    exact = _reference(h.double(), w.double(), y, False)
    ref, fused = _reference(h, w, y, True), _fused(h, w, y, True)
    for i in (1, 2):
        err = lambda g: ((g.double() - exact[i]).norm() / exact[i].norm()).item()
        assert err(fused[i]) <= 1.1 * err(ref[i]) and err(fused[i]) < 1e-2
    assert abs(fused[0].item() - exact[0].item()) < 1e-3


def test_fused_head_is_the_model_loss_for_t5_pairs():
    """Through the T5 objective's path: packed pairs, the LM head swapped for a LossHead, the loss and
    every gradient equal to the model's own loss (labels given to the model)."""
    from tests.test_packing import Tok, grads, seqs, t5

    from pretrain.objectives._t5 import packed_forward, pair_batch
    src, tgt = seqs([9, 4, 12, 3, 7], seed=1), seqs([3, 5, 2, 6, 4], seed=2)
    packed = pair_batch(Tok, src, tgt, 16, 8, packing=True)
    model = t5("sdpa")
    packed_forward(model, packed).loss.backward()
    plain = grads(model)
    model.zero_grad()
    head = lm_loss.install(model.lm_head)
    assert isinstance(head, lm_loss.LossHead)
    with head.loss_on(packed["labels"]):
        loss = packed_forward(model, packed, with_labels=False).logits
    loss.backward()
    fused = grads(model)
    assert loss.shape == () and plain.keys() == fused.keys()
    for name in plain:
        torch.testing.assert_close(fused[name], plain[name], atol=2e-6, rtol=1e-4, msg=name)
    assert model(**pair_batch(Tok, src, tgt, 16, 8)).logits.shape[-1] == 50   # outside loss_on: logits again


def test_cpu_dropout_has_torch_dropout_distribution_and_gradient():
    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    y = D.fast_dropout(x, 0.1)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 3e-3             # 200k draws: sd 7e-4
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())                # d/dx is the same mask and scale
    torch.manual_seed(0)
    assert torch.equal(D.fast_dropout(torch.ones(400, 500), 0.1) != 0, kept)   # torch's seed drives it
    assert not torch.equal(D.fast_dropout(torch.ones(400, 500), 0.1) != 0, kept)
    assert D.fast_dropout(x, 0.1, training=False) is x


@pytest.mark.parametrize("packed", [False, True])
def test_installed_cpu_dropout_keeps_the_model_exact_without_dropout_and_drops_with_it(packed):
    """``install`` swaps every dropout of a T5 model; in eval (and with p = 0) outputs are unchanged,
    in training the attention and hidden dropout draw their masks from torch's seed."""
    from tests.test_packing import Tok, seqs, t5

    from pretrain.objectives._t5 import packed_forward, pair_batch
    src, tgt = seqs([9, 4, 12, 3, 7], seed=1), seqs([3, 5, 2, 6, 4], seed=2)
    batch = pair_batch(Tok, src, tgt, 16, 8, packing=packed)
    run = (lambda m: packed_forward(m, batch).loss) if packed else (lambda m: m(**batch).loss)
    model = t5("sdpa")
    model.eval()
    before = run(model)

    def set_p(p):
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = p
        for block in (*model.encoder.block, *model.decoder.block):
            for layer in block.layer:
                for att in ("SelfAttention", "EncDecAttention"):
                    if hasattr(layer, att):
                        getattr(layer, att).dropout = p

    set_p(0.1)
    assert D.install(model) > 0 and model.config._attn_implementation == D.ATTENTION
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    torch.testing.assert_close(run(model), before)                # eval: torch's SDPA, unchanged
    model.train()
    set_p(1e-9)            # our attention path (bias, masks, causal) with nothing dropped: SDPA's result
    torch.testing.assert_close(run(model), before, atol=1e-5, rtol=1e-5)
    set_p(0.1)
    torch.manual_seed(3)
    a = run(model)
    torch.manual_seed(3)
    assert torch.equal(run(model), a) and not torch.equal(a, before)
    a.backward()
