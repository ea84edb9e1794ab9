"""Dropout whose random mask is cheap on CPU: same distribution, a fraction of torch's cost.

torch draws a CPU dropout mask with ``bernoulli_`` on its Mersenne Twister: 12.5 ms for the 2.4M
attention probabilities of one T5 encoder layer (batch 14 x 4 heads x 192 x 192), more than the
layer's attention matmuls, and a quarter of the bench's T5 step (BENCHMARKS.md). Here the mask comes from
numpy's SFC64 generator, 16 random bits per element compared with ``round(p * 65536)`` (p off by at
most 2**-17), seeded per call from torch's default generator: runs stay a function of
``torch.manual_seed`` and of the RNG state a checkpoint restores. 1.0 ms for the same mask.

``install(model)`` puts it where a Hugging Face model drops out: every ``nn.Dropout`` module, and
the attention probabilities, through transformers' ``sdpa`` attention function with this dropout,
registered under its own name (``ATTENTION``). Without dropout, or off the CPU, everything runs torch's own path (on CUDA its
Philox dropout is cheap, and SDPA / FlashAttention keep their fused kernels).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ATTENTION = "sdpa_cpu_dropout"     # the attention implementation name ``install`` registers and selects
_BITS = 16


def keep_mask(shape, p: float) -> torch.Tensor:
    """Boolean mask, False with probability ``p`` (to 2**-17), from 16 random bits per element."""
    n = int(np.prod(shape))
    seed = int(torch.randint(0, 2 ** 62, (1,)).item())          # torch's generator drives the stream
    raw = np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.uint16)[:n]
    return torch.from_numpy(raw >= np.uint16(round(p * (1 << _BITS)))).view(shape)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x * scale, 0)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with the cheap mask on CPU."""
    if not training or x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    return _Dropout.apply(x, keep_mask(x.shape, p), 1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` with ``fast_dropout``'s mask (no parameters: a swapped module saves and loads as before)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def sdpa_cpu_dropout(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     is_causal=None, position_bias=None, **kwargs):
    """Transformers' ``sdpa`` attention, except that with dropout on CPU the probabilities are
    computed as SDPA's math path does (softmax(q k^T scale + bias + mask)) and dropped with
    ``fast_dropout``; torch's SDPA would draw them with ``bernoulli_``."""
    from transformers.integrations.sdpa_attention import create_position_bias_mask, sdpa_attention_forward

    if not module.training or dropout == 0.0 or query.device.type != "cpu" or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, position_bias=position_bias, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = (t.repeat_interleave(groups, dim=1) for t in (key, value))
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = q_len > 1 and attention_mask is None and causal
    if position_bias is not None:
        attention_mask, causal = create_position_bias_mask(position_bias, attention_mask, causal, query, key), False
    scores = torch.matmul(query, key.transpose(-1, -2)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if causal:
        scores = scores.masked_fill(torch.ones(q_len, kv_len, dtype=torch.bool, device=scores.device)
                                    .tril(kv_len - q_len).logical_not(), torch.finfo(scores.dtype).min)
    if attention_mask is not None:
        scores = (scores.masked_fill(attention_mask.logical_not(), torch.finfo(scores.dtype).min)
                  if attention_mask.dtype == torch.bool else scores + attention_mask.to(scores.dtype))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(fast_dropout(probs, dropout), value)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, sdpa_cpu_dropout)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def install(model: nn.Module) -> int:
    """Use the cheap CPU dropout in ``model`` (in place); returns how many places now use it.

    Swaps every ``nn.Dropout`` for ``Dropout`` and, where a Hugging Face model runs ``sdpa``
    attention, selects ``sdpa_cpu_dropout`` (boolean masks as before: ``packing.model_mask``).
    A model without dropout computes exactly as before.
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
            n += 1
    return n
