"""Dropout whose random mask is cheap on CPU: same distribution, a fraction of torch's cost.

torch draws a CPU dropout mask with ``bernoulli_`` on its Mersenne Twister: 12.5 ms for the 2.4M
attention probabilities of one T5 encoder layer (batch 14 x 4 heads x 192 x 192), more than the
layer's attention matmuls, and a quarter of the bench's T5 step (BENCHMARKS.md). Here the mask comes from
numpy's SFC64 generator, 16 random bits per element compared with ``round(p * 65536)`` (p off by at
most 2**-17), seeded per call from torch's default generator: runs stay a function of
``torch.manual_seed`` and of the RNG state a checkpoint restores. 1.0 ms for the same mask.

``install(model)`` puts it where a Hugging Face model drops out: every ``nn.Dropout`` module, and
the attention probabilities, through an attention function registered with transformers under its
own name (``ATTENTION``), which also adds the position bias and mask in place instead of building
transformers' per-layer bias + mask tensor (in training on CPU, with or without dropout). In eval
or off the CPU, everything runs transformers' ``sdpa`` path (on CUDA torch's Philox dropout is cheap, and SDPA /
FlashAttention keep their fused kernels).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pretrain.models import bias_by_offset
from pretrain.packing import LAYOUT

ATTENTION = "sdpa_cpu_dropout"     # the attention implementation name ``install`` registers and selects
_BITS = 16


def keep_mask(shape, p: float) -> torch.Tensor:
    """Boolean mask, False with probability ``p`` (to 2**-17), from 16 random bits per element."""
    n = int(np.prod(shape))
    seed = int(torch.randint(0, 2 ** 62, (1,)).item())          # torch's generator drives the stream
    raw = np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.uint16)[:n]
    return torch.from_numpy(raw >= np.uint16(round(p * (1 << _BITS)))).view(shape)


class _Dropout(torch.autograd.Function):
    """x * keep * scale, forward and backward: a product with the mask's bytes, then the scale in
    place (two light passes; ``torch.where(keep, x * scale, 0)`` took three times as long)."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep.view(torch.uint8)).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return (grad * keep.view(torch.uint8)).mul_(ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with the cheap mask on CPU."""
    if not training or x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    return _Dropout.apply(x, keep_mask(x.shape, p), 1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` with ``fast_dropout``'s mask (no parameters: a swapped module saves and loads as before)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


_CACHED = "_cpu_attention_additive"     # attribute of a boolean mask tensor: (its version, dtype, additive, full rows)


def _mask_terms(allowed: torch.Tensor, dtype: torch.dtype, cache: bool = True):
    """A boolean attention mask (True = attend) as an additive one in ``dtype`` (0 or the dtype's
    minimum) and its rows with no open key (None if there are none). Every layer of a stack gets
    the same mask object, so it is converted once per forward, not once per layer: ``masked_fill``
    with a broadcast mask is ten times slower than adding a tensor on CPU. The converted form is
    kept on the mask tensor itself (checked against its version), so it is freed with it and
    nothing outlives the forward."""
    hit = getattr(allowed, _CACHED, None) if cache else None
    if hit is not None and hit[0] == allowed._version and hit[1] == dtype:
        return hit[2], hit[3]
    blocked = allowed.logical_not()
    additive = torch.zeros(blocked.shape, dtype=dtype, device=allowed.device).masked_fill_(blocked, torch.finfo(dtype).min)
    full = blocked.all(dim=-1, keepdim=True)
    full = full if bool(full.any()) else None
    if cache:
        setattr(allowed, _CACHED, (allowed._version, dtype, additive, full))
    return additive, full


_BIAS = "_cpu_attention_bias"           # attribute of a position bias tensor: (its version, the form to add)


def _bias_term(bias: torch.Tensor | None) -> torch.Tensor | None:
    """The position bias as ``_BiasMask`` adds it: contiguous, or None where it is all zeros. T5
    computes its relative bias once per stack as a permuted view (heads innermost), and every layer
    of the stack adds that same tensor: read with that stride, the add took 10x as long as a
    contiguous one (4.9 vs 0.5 ms for a 3 x 6 x 474 x 474 layer). Its cross-attention bias is a
    tensor of zeros, added in every layer for nothing. Both forms are worked out once per forward and
    kept on the bias tensor (checked against its version), as ``_mask_terms`` keeps the mask's."""
    if bias is None:
        return None
    hit = getattr(bias, _BIAS, None)
    if hit is not None and hit[0] == bias._version:
        return hit[1]
    if not bias.requires_grad and not bias.any():
        term = None
    else:
        term = bias.contiguous()
    setattr(bias, _BIAS, (bias._version, term))
    return term


class _BiasMask(torch.autograd.Function):
    """``scores + bias + mask`` in place on the fresh scores, the mask additive (0 or the dtype's
    minimum; ``_mask_terms``). Transformers builds a ``(B, H, Lq, Lk)`` bias + mask tensor per layer,
    which costs more than the layer's score matmul on CPU.

    Backward passes the gradient through unchanged, as an additive mask's is. Rows with every key
    blocked (``full``: uniform probabilities) get none, as ``masked_fill`` would give. The bias
    gradient is summed over its broadcast dimensions in float32."""

    @staticmethod
    def forward(ctx, scores, bias, additive, full):
        if bias is not None:
            scores.add_(bias.to(scores.dtype))
        if additive is not None:
            scores.add_(additive.to(scores.dtype))
        ctx.mark_dirty(scores)
        ctx.full = full
        ctx.bias = (bias.shape, bias.dtype) if bias is not None and ctx.needs_input_grad[1] else None
        return scores

    @staticmethod
    def backward(ctx, grad):
        if ctx.full is not None:
            grad = grad.masked_fill_(ctx.full, 0)       # softmax's backward made it for this use alone
        grad_bias = None
        if ctx.bias is not None:
            shape, dtype = ctx.bias
            lead = grad.dim() - len(shape)
            dims = [*range(lead), *(lead + d for d, n in enumerate(shape) if n == 1 and grad.shape[lead + d] != 1)]
            if dims == [0]:      # T5's (1, H, Lq, Lk) bias: a float32 sum over the batch, one row at a time
                total = grad[0].to(torch.float32, copy=True)   # (3.0x torch's sum(dtype=float32) over dim 0 on CPU)
                for row in grad[1:]:
                    total.add_(row)
                grad_bias = total.to(dtype).reshape(shape)
            else:
                grad_bias = (grad.sum(dims, keepdim=True, dtype=torch.float32) if dims else grad).to(dtype).reshape(shape)
        return grad, grad_bias, None, None


_WINDOW = "_cpu_attention_window"       # attribute of a by-offset bias: (its version, width, the (1, H, w, w) corner)


def _corner(bias: torch.Tensor, width: int) -> torch.Tensor:
    """The ``width x width`` top-left corner of a bias made by ``models.relative_bias_by_offset``
    (which depends on ``key - query`` alone, so a packed row of ``width`` tokens reads it as is),
    built from the offsets once per forward and kept on the bias, as ``_bias_term`` keeps its form.
    The bias of the flattened sequence is then neither read nor given a gradient."""
    hit = getattr(bias, _WINDOW, None)
    if hit is not None and hit[0] == bias._version and hit[1] == width:
        return hit[2]
    values, q_len = bias._offset_values      # values[:, o + q_len - 1] is the bias at offset o = key - query
    corner = (values[:, q_len - width:q_len + width - 1].unfold(1, width, 1).flip(1)
              .to(bias.dtype, memory_format=torch.contiguous_format).contiguous().unsqueeze(0))
    setattr(bias, _WINDOW, (bias._version, width, corner))
    return corner


def _on_rows(query, key, value, mask, bias, dropout: float, scale: float):
    """The attention of a flattened packed batch (``packing.flatten_rows``), computed on its rows
    (``packing.with_rows``): queries, keys and values gathered into the rows, the masked rows'
    attention, the outputs gathered back in token order (flat padding: zeros). Linear layers run
    on the flat tokens; attention keeps the rows' few shapes. Returns (1, N, H, d)."""
    q_index, q_tokens, k_index, (rows, q_len), (_, k_len) = getattr(mask, LAYOUT)
    _, heads, n, dim = query.shape
    if bias is not None:
        if hasattr(bias, "_offset_values"):
            bias = _corner(bias, max(q_len, k_len))[:, :, :q_len, :k_len]
        elif _bias_term(bias) is not None and bias.any():   # zeros (T5's cross-attention, also with the gradient
            # that checkpointing gives them) add nothing
            raise ValueError("a flattened packed batch needs a position bias that depends on key - query alone "
                             "(train.relative_bias_by_offset) or none")
        else:
            bias = None
    q, k, v = (t.transpose(1, 2).reshape(-1, heads * dim).index_select(0, i).view(rows, length, heads, dim)
               .transpose(1, 2) for t, i, length in ((query, q_index, q_len), (key, k_index, k_len), (value, k_index, k_len)))
    out = _masked(q, k, v, mask, bias, dropout, scale, causal=False)
    out = out.reshape(-1, heads * dim).index_select(0, q_tokens)
    out = torch.cat([out, out.new_zeros(n - out.shape[0], heads * dim)])
    return out.view(1, n, heads, dim)


def _masked(query, key, value, attention_mask, position_bias, dropout: float, scale: float, causal: bool):
    """softmax(q k^T scale + bias + mask) v with the bias and mask added in place; (B, Lq, H, d)."""
    q_len, kv_len = query.shape[2], key.shape[2]
    scores = torch.matmul(query * scale if scale != 1.0 else query, key.transpose(-1, -2))
    additive = full = None
    if causal:
        additive, full = _mask_terms(torch.ones(q_len, kv_len, dtype=torch.bool, device=scores.device)
                                     .tril(kv_len - q_len), scores.dtype, cache=False)
    elif attention_mask is not None and attention_mask.dtype == torch.bool:
        additive, full = _mask_terms(attention_mask, scores.dtype)
    elif attention_mask is not None:
        additive = attention_mask
    scores = _BiasMask.apply(scores, _bias_term(position_bias), additive, full)
    with torch.autocast(scores.device.type, enabled=False):
        probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(fast_dropout(probs, dropout) if dropout > 0.0 else probs, value)
    return out.transpose(1, 2).contiguous()


def sdpa_cpu_dropout(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     is_causal=None, position_bias=None, **kwargs):
    """Transformers' ``sdpa`` attention, except that in training on CPU the probabilities are
    computed as SDPA's math path does (softmax(q k^T scale + bias + mask)) and dropped with
    ``fast_dropout``; torch's SDPA would draw them with ``bernoulli_``. Also without dropout (T5
    ``small`` / ``base``), where it beats transformers' path by skipping its per-layer bias + mask
    tensor: 1.17x a T5-small step in bf16 (BENCHMARKS.md).

    Computed in the inputs' dtype (bf16 under autocast, as SDPA does): the bias and mask are
    added in place (``_BiasMask``), the scale goes on the queries (exact for a power of two, e.g.
    1/8 at 64 dimensions per head; T5 has none), and the softmax accumulates in float32 inside
    its kernel and returns the inputs' dtype, which is what the next matmul takes."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not module.training or query.device.type != "cpu" or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, position_bias=position_bias, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = (t.repeat_interleave(groups, dim=1) for t in (key, value))
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = q_len > 1 and attention_mask is None and causal
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if attention_mask is not None and hasattr(attention_mask, LAYOUT):
        return _on_rows(query, key, value, attention_mask, position_bias, dropout, scale), None
    if attention_mask is not None and attention_mask.shape[-1] != kv_len:
        raise ValueError(f"attention mask of shape {tuple(attention_mask.shape)} for {q_len} queries and {kv_len} keys: "
                         "a flattened packed batch whose mask lost its row layout")
    return _masked(query, key, value, attention_mask, position_bias, dropout, scale, causal), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, sdpa_cpu_dropout)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def flattens_packed(model: nn.Module) -> bool:
    """Whether a packed batch for ``model`` is worth flattening now (``install`` with ``flatten``,
    in training): this attention then takes the rows' mask with its layout (``_on_rows``). Not
    under ZeRO-3, whose forward hooks hand the layers other tensor objects than the mask given."""
    if not (model.training and getattr(model, "_flatten_packed", False)):
        return False
    return not hasattr(next(model.parameters(), None), "ds_id")


def install(model: nn.Module, flatten: bool = True) -> int:
    """Use the cheap CPU dropout in ``model`` (in place); returns how many places now use it.

    Swaps every ``nn.Dropout`` for ``Dropout`` and, where a Hugging Face model runs ``sdpa``
    attention, selects ``sdpa_cpu_dropout`` (boolean masks as before: ``packing.model_mask``).
    In eval the model computes exactly as before; in training without dropout, the same function
    to float rounding (the attention's sums run in another order). ``flatten``: in training, the
    objective may hand it a flattened packed batch (``flattens_packed``, ``packing.with_rows``), if
    the model's relative biases (if any) are built by ``models.relative_bias_by_offset``.
    """
    n = 0
    for m in model.modules():
        if type(m) is nn.Dropout:
            m.__class__ = Dropout
            n += 1
        config = getattr(m, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(m, "set_attn_implementation"):
            _register()
            m.set_attn_implementation(ATTENTION)
            # a relative bias must not depend on flat positions (_on_rows): decided once, here
            m._flatten_packed = flatten and bias_by_offset(m)
            n += 1
    return n
