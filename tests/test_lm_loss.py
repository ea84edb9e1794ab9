"""The fused LM head + cross-entropy (pretrain.lm_loss), the cheap CPU dropout and attention
(pretrain.dropout) and the fused GELU (pretrain.models.fuse_gelu): the same loss, gradients and
distribution as torch's and transformers' own paths."""
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


@pytest.mark.parametrize("chunk", [64, 50])     # a chunk that is no multiple of lm_loss.ROWS too
@pytest.mark.parametrize("rows", [lm_loss.ROWS, 10**6])     # 10**6: the whole chunk at once, as on GPU
@pytest.mark.parametrize("index_free", [False, True], ids=["cpu-rows", "gpu-rows"])
def test_fused_loss_and_gradients_equal_cross_entropy_in_fp32(chunk, rows, index_free, monkeypatch):
    """gpu-rows: every row goes in, the unlabelled ones counting zero, as off the CPU (no boolean
    selection, whose size the host would have to read from the device)."""
    monkeypatch.setattr(lm_loss, "ROWS", rows)
    monkeypatch.setattr(lm_loss, "index_free", lambda device: index_free)
    h, w, y = _problem()
    ref, fused = _reference(h, w, y, False), _fused(h, w, y, False, chunk=chunk)
    torch.testing.assert_close(fused[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused[1], ref[1], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(fused[2], ref[2], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("index_free", [False, True], ids=["cpu-rows", "gpu-rows"])
def test_fused_under_bf16_autocast_is_at_least_as_close_to_float64(index_free, monkeypatch):
    monkeypatch.setattr(lm_loss, "index_free", lambda device: index_free)
    h, w, y = _problem(seed=1)
    exact = _reference(h.double(), w.double(), y, False)
    ref, fused = _reference(h, w, y, True), _fused(h, w, y, True)
    for i in (1, 2):
        err = lambda g: ((g.double() - exact[i]).norm() / exact[i].norm()).item()
        assert err(fused[i]) <= 1.1 * err(ref[i]) and err(fused[i]) < 1e-2
    assert abs(fused[0].item() - exact[0].item()) < 1e-3


def test_fused_loss_is_exact_where_the_labels_probability_underflows():
    """A label 300 below the top logit has probability e^-300, zero in float32; the loss must still be
    log-sum-exp - logit (300 here), not -log(0), and its gradient softmax - onehot."""
    v = 40
    h, w = torch.zeros(3, v), torch.eye(v)
    h[0, 0], h[1, 7], h[2, 3] = 300.0, 2.0, -50.0
    y = torch.tensor([5, 7, 3])
    for chunk in (1, 2, 64):
        ref, fused = _reference(h, w, y, False), _fused(h, w, y, False, chunk=chunk)
        assert torch.isfinite(fused[0])
        torch.testing.assert_close(fused[0], ref[0], atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(fused[1], ref[1], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(fused[2], ref[2], atol=1e-6, rtol=1e-4)


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
    from tests.test_packing import Tok, assert_same_grads, grads, seqs, t5

    from pretrain.objectives._t5 import packed_forward, pair_batch
    src, tgt = seqs([9, 4, 12, 3, 7], seed=1), seqs([3, 5, 2, 6, 4], seed=2)
    batch = pair_batch(Tok, src, tgt, 16, 8, packing=packed)
    run = (lambda m: packed_forward(m, batch).loss) if packed else (lambda m: m(**batch).loss)
    model = t5("sdpa")
    model.eval()
    before = run(model)
    before.backward()
    sdpa_grads = grads(model)
    model.zero_grad()

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
    ours = run(model)
    torch.testing.assert_close(ours, before, atol=1e-5, rtol=1e-5)
    ours.backward()        # and its gradients, the relative attention bias's included
    assert_same_grads(grads(model), sdpa_grads)
    assert any("relative_attention_bias" in n for n in sdpa_grads)
    model.zero_grad()
    set_p(0.1)
    torch.manual_seed(3)
    a = run(model)
    torch.manual_seed(3)
    assert torch.equal(run(model), a) and not torch.equal(a, before)
    a.backward()


class _Attention(torch.nn.Module):
    training = True


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "causal"])
def test_cpu_attention_matches_sdpa_with_bias_masks_and_bf16(mask_kind):
    """``sdpa_cpu_dropout`` with nothing dropped: SDPA's output and gradients (queries, keys, values,
    a broadcast position bias) for boolean, additive and causal masks, and close to it in bf16."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    g = torch.Generator().manual_seed(0)
    B, H, L, dh = 3, 2, 7, 8
    q, k, v = (torch.randn(B, H, L, dh, generator=g) for _ in range(3))
    bias = torch.randn(1, H, L, L, generator=g)
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 2, 2, -1]])
    mask = None if mask_kind == "causal" else (seg[:, :, None] == seg[:, None, :]) | (seg[:, :, None] < 0)
    mask = mask if mask is None else mask[:, None]
    if mask_kind == "additive":
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)

    def run(fn, dtype, p):
        leaves = [t.clone().to(dtype).requires_grad_() for t in (q, k, v)] + [bias.clone().requires_grad_()]
        out, _ = fn(_Attention(), *leaves[:3], mask, dropout=p, scaling=dh ** -0.5, is_causal=mask_kind == "causal",
                    position_bias=leaves[3])
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        return [out.float(), *(t.grad.float() for t in leaves)]

    want = run(sdpa_attention_forward, torch.float32, 0.0)
    for p in (1e-9, 0.0):                  # p = 0 in training takes our path too (no mask drawn)
        for got, ref in zip(run(D.sdpa_cpu_dropout, torch.float32, p), want):
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    for got, ref in zip(run(D.sdpa_cpu_dropout, torch.bfloat16, 1e-9), want):   # bf16 rounding only
        torch.testing.assert_close(got, ref, atol=0.1, rtol=0.05)
    out = run(D.sdpa_cpu_dropout, torch.float32, 0.5)[0]
    assert torch.isfinite(out).all() and not torch.allclose(out, want[0], atol=1e-3)      # p = 0.5 drops


def test_cpu_attention_row_with_every_key_blocked_stays_finite():
    """A query with no open key (all masked): the uniform average of the values, as transformers' bias
    mask gives it, and no gradient through the blocked scores."""
    q, k, v = (torch.randn(1, 1, 3, 4, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True, True, False], [False, False, False], [True, False, True]])[None, None]
    bias = torch.zeros(1, 1, 3, 3, requires_grad=True)
    out, _ = D.sdpa_cpu_dropout(_Attention(), q, k, v, mask, dropout=1e-9, scaling=0.5, position_bias=bias)
    torch.testing.assert_close(out[0, 1, 0], v[0, 0].mean(0).detach())
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v, bias)) and torch.equal(bias.grad[0, 0, 1], torch.zeros(3))


def test_fused_gelu_is_gelu_new_in_one_kernel():
    """``fuse_gelu`` swaps T5's ``gelu_new`` for torch's tanh GELU: same outputs and gradients to float
    rounding, same parameters, and the module still is a ``NewGELUActivation`` for code that asks."""
    from transformers.activations import NewGELUActivation

    from pretrain.models import fuse_gelu
    from pretrain.objectives._t5 import pair_batch
    from tests.test_packing import Tok, assert_same_grads, grads, seqs, t5
    batch = pair_batch(Tok, seqs([9, 4, 12], seed=1), seqs([3, 5, 2], seed=2), 16, 8)
    model = t5("sdpa")
    x = torch.linspace(-6, 6, 1001)
    reference = model.encoder.block[0].layer[1].DenseReluDense.act(x)
    before = model(**batch).loss
    before.backward()
    want, keys = grads(model), list(model.state_dict())
    model.zero_grad()
    assert fuse_gelu(model) == 4 and fuse_gelu(model) == 0
    act = model.encoder.block[0].layer[1].DenseReluDense.act
    assert isinstance(act, NewGELUActivation) and type(act) is not NewGELUActivation
    torch.testing.assert_close(act(x), reference, atol=1e-6, rtol=1e-6)
    after = model(**batch).loss
    after.backward()
    torch.testing.assert_close(after, before)
    assert_same_grads(grads(model), want, tol=1e-6)
    assert list(model.state_dict()) == keys


def _t5_swap_keeps_loss_and_grads(swap, tol: float):
    """A small T5's loss and gradients before and after ``swap(model)`` (which returns a count):
    asserts the gradients agree within ``tol``; returns the count and (loss after, loss before)."""
    from pretrain.objectives._t5 import pair_batch
    from tests.test_packing import Tok, assert_same_grads, grads, seqs, t5
    batch = pair_batch(Tok, seqs([9, 4, 12], seed=1), seqs([3, 5, 2], seed=2), 16, 8)
    model = t5("sdpa")
    before = model(**batch).loss
    before.backward()
    want = grads(model)
    model.zero_grad()
    swapped = swap(model)
    after = model(**batch).loss
    after.backward()
    assert_same_grads(grads(model), want, tol=tol)
    return swapped, (after, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rms_norm_is_t5s_layer_norm(dtype):
    """``fuse_rms_norm``: T5's layer norm in one autograd node gives transformers' outputs and input
    and weight gradients, in fp32 and with bf16 weights and activations (where it is at least as close
    to float64), and the whole model's loss and gradients are unchanged."""
    from transformers.models.mt5.modeling_mt5 import MT5LayerNorm

    from pretrain.models import fuse_rms_norm
    g = torch.Generator().manual_seed(0)
    x, grad = torch.randn(3, 37, 64, generator=g) * 3, torch.randn(3, 37, 64, generator=g)
    weight = torch.rand(64, generator=g) + 0.5
    results = []
    for fused in (False, True, None):           # None: transformers' in float64, the reference
        norm = MT5LayerNorm(64, eps=1e-6).to(torch.float64 if fused is None else dtype)
        with torch.no_grad():
            norm.weight.copy_(weight)
        if fused:
            assert fuse_rms_norm(norm) == 1 and fuse_rms_norm(norm) == 0 and isinstance(norm, MT5LayerNorm)
        xi = x.to(norm.weight.dtype, copy=True).requires_grad_()
        out = norm(xi)
        out.backward(grad.to(out.dtype))
        results.append([out.detach().double(), xi.grad.double(), norm.weight.grad.double()])
    err = lambda r: [((a - b).norm() / b.norm()).item() for a, b in zip(r, results[2])]
    if dtype == torch.float32:
        for a, b in zip(results[1], results[0]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    else:
        assert all(e <= 1.05 * max(t, 1e-3) for e, t in zip(err(results[1]), err(results[0]))), (err(results[1]), err(results[0]))

    swapped, (after, before) = _t5_swap_keeps_loss_and_grads(fuse_rms_norm, tol=1e-5)
    assert swapped == 2 * 2 + 3 * 2 + 2          # per layer: 2 (encoder), 3 (decoder); the finals
    torch.testing.assert_close(after, before)


def test_cpu_attention_mask_cache_follows_the_mask():
    """The additive form of a boolean mask is reused across layers (same object, kept on it), and
    rebuilt when the mask is changed in place or a new one comes."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)

    def attend(m):
        torch.manual_seed(0)
        return D.sdpa_cpu_dropout(_Attention(), q, k, v, m, dropout=1e-9, scaling=0.5)[0]

    first = attend(mask)
    assert torch.equal(attend(mask), first)
    mask[:, :, :, 3:] = False                       # in place: the cached form is stale
    torch.testing.assert_close(attend(mask), attend(mask.clone()))
    assert not torch.allclose(attend(mask), first)


def test_cpu_attention_position_bias_as_t5_makes_it():
    """T5's relative bias is a permuted view (heads innermost) that every layer of a stack adds; its
    cross-attention bias is zeros without a gradient. The first is made contiguous once per forward
    and kept on the tensor (rebuilt if changed in place), the second is not added at all; outputs
    and gradients stay SDPA's, over two layers sharing the bias."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    g = torch.Generator().manual_seed(2)
    B, H, L, dh = 3, 2, 6, 4
    q, k, v = (torch.randn(B, H, L, dh, generator=g) for _ in range(3))
    table = torch.randn(L, L, H, generator=g)
    mask = torch.ones(B, 1, L, L, dtype=torch.bool)
    mask[2, :, :4, 4:] = False       # padding keys; a row with no key open: test_cpu_attention_row_with_every_key_...

    def run(fn):
        emb = table.clone().requires_grad_()
        bias = emb.permute(2, 0, 1).unsqueeze(0)
        assert not bias.is_contiguous()
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        outs = [fn(_Attention(), *leaves, mask, dropout=1e-9 if fn is D.sdpa_cpu_dropout else 0.0, scaling=0.5,
                   position_bias=bias)[0] for _ in range(2)]
        sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in outs).backward()
        return [*outs, *(t.grad for t in leaves), emb.grad], bias

    (got, bias), (want, _) = run(D.sdpa_cpu_dropout), run(sdpa_attention_forward)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert D._bias_term(bias) is D._bias_term(bias) and D._bias_term(bias).is_contiguous()
    with torch.no_grad():
        bias.add_(1.0)                                      # in place: the kept form is stale
    torch.testing.assert_close(D._bias_term(bias), bias.contiguous())
    zeros = torch.zeros(1, H, L, L)
    assert D._bias_term(zeros) is None
    torch.testing.assert_close(D.sdpa_cpu_dropout(_Attention(), q, k, v, mask, dropout=1e-9, scaling=0.5,
                                                  position_bias=zeros)[0],
                               sdpa_attention_forward(_Attention(), q, k, v, mask, dropout=0.0, scaling=0.5,
                                                      position_bias=zeros)[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("decoder", [False, True])
def test_relative_bias_by_offset_is_t5s_bias_with_its_bf16_gradient_summed_in_fp32(decoder):
    """``relative_bias_by_offset``: the bias T5 computes, value for value, for square and rectangular
    shapes; its table's gradient equal to transformers' in float64, and in bf16 within bf16 rounding of
    the exact one (transformers' bf16 embedding backward sums every pair in bf16); generation with past
    tokens keeps transformers' computation; a whole model's loss and gradients are unchanged."""
    import copy

    from transformers import MT5Config
    from transformers.models.mt5.modeling_mt5 import MT5Attention

    from pretrain.models import relative_bias_by_offset

    cfg = MT5Config(d_model=32, d_kv=8, num_heads=4, relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, is_decoder=decoder)
    torch.manual_seed(0)
    ref = MT5Attention(cfg, has_relative_attention_bias=True, layer_idx=0).double()
    ours = copy.deepcopy(ref)
    assert relative_bias_by_offset(ours) == 1 and relative_bias_by_offset(ours) == 0
    for q, k in ((300, 300), (7, 12), (12, 7), (1, 1)):
        g = torch.randn(1, 4, q, k, dtype=torch.float64)
        a, b = ref.compute_bias(q, k), ours.compute_bias(q, k)
        assert torch.equal(a, b) and b.is_contiguous()
        a.backward(g)
        b.backward(g)
        torch.testing.assert_close(ours.relative_attention_bias.weight.grad, ref.relative_attention_bias.weight.grad)
        exact = ref.relative_attention_bias.weight.grad.clone()
        low = copy.deepcopy(ours).bfloat16()
        low.relative_attention_bias.weight.grad = None
        assert torch.equal(low.compute_bias(q, k), a.bfloat16())
        low.compute_bias(q, k).backward(g.bfloat16())
        err = (low.relative_attention_bias.weight.grad.double() - exact).abs().max() / exact.abs().max()
        assert err < 1e-2, (q, k, float(err))
        for m in (ref, ours):
            m.relative_attention_bias.weight.grad = None
    torch.testing.assert_close(ours.compute_bias(3, 8, past_seen_tokens=5), ref.compute_bias(3, 8, past_seen_tokens=5))

    swapped, (after, before) = _t5_swap_keeps_loss_and_grads(relative_bias_by_offset, tol=1e-6)
    assert swapped == 2                 # the first layer of each stack
    assert torch.equal(after, before)
