"""Architecture families: each is an ``arch:`` config section plus the ``transformers`` config it makes.

An objective names its family (``ObjectiveSpec.arch``); the family owns the dimensions and
their checks, so an encoder config has no T5 fields and a T5 config no BERT ones. Models
always come from ``transformers``: a run's export loads with its Auto classes.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass
from typing import Literal

import torch

from pipeline.typed_config import InvalidValue


@dataclass
class EncoderArch:
    """BERT / RoFormer / ELECTRA-style post-norm encoders."""
    d_model: int = 256                      # hidden size
    d_ff: int = 1024                        # feed-forward size
    num_layers: int = 4
    num_heads: int = 4                      # head size = d_model / num_heads
    dropout_rate: float = 0.1
    feed_forward_proj: Literal["gelu", "relu"] = "gelu"

    def __post_init__(self):
        for key in ("d_model", "d_ff", "num_layers", "num_heads"):
            if getattr(self, key) <= 0:
                raise InvalidValue(key, f"must be > 0, got {getattr(self, key)}")
        if self.d_model % self.num_heads:
            raise InvalidValue("num_heads", f"must divide d_model ({self.d_model}), got {self.num_heads}")


@dataclass
class T5Arch:
    """mT5 / T5 v1.1: gated-GELU, RMSNorm, relative position buckets, untied LM head."""
    d_model: int = 512
    d_ff: int = 1024
    num_layers: int = 8
    num_decoder_layers: int = 8
    num_heads: int = 6
    d_kv: int = 64                          # T5 heads have their own size (d_model != heads * d_kv is fine)
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.0               # T5 v1.1 / mT5: no dropout in pretraining
    feed_forward_proj: Literal["gated-gelu", "relu", "gelu", "gated-silu"] = "gated-gelu"
    initializer_factor: float = 1.0

    def __post_init__(self):
        for key in ("d_model", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "d_kv"):
            if getattr(self, key) <= 0:
                raise InvalidValue(key, f"must be > 0, got {getattr(self, key)}")


def encoder_config_kwargs(arch: EncoderArch, vocab_size: int, pad_id: int, max_positions: int,
                          bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """The keyword arguments BERT, RoFormer and ELECTRA configs share. The tokenizer's BOS/EOS ids go
    into the config too, so ``transformers.Trainer`` finds nothing to realign (and warns about) on load."""
    ids = {k: v for k, v in (("bos_token_id", bos_id), ("eos_token_id", eos_id)) if v is not None}
    return dict(vocab_size=vocab_size, hidden_size=arch.d_model, num_hidden_layers=arch.num_layers,
                num_attention_heads=arch.num_heads, intermediate_size=arch.d_ff, hidden_act=arch.feed_forward_proj,
                hidden_dropout_prob=arch.dropout_rate, attention_probs_dropout_prob=arch.dropout_rate,
                max_position_embeddings=max_positions, pad_token_id=pad_id, **ids)


def t5_special_ids(tokenizer) -> dict[str, int]:
    """T5 PEGASUS conventions ([CLS] starts the decoder, [SEP] ends) with T5's own as the fallback
    (a kept mT5 tokenizer: the decoder starts with <pad>, sequences end with </s>)."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.pad_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return {"start": start, "eos": eos, "pad": tokenizer.pad_token_id}


def t5_config(arch: T5Arch, tokenizer):
    """An MT5Config with the T5 PEGASUS token conventions (``t5_special_ids``)."""
    from transformers import MT5Config

    ids = t5_special_ids(tokenizer)
    return MT5Config(
        vocab_size=len(tokenizer), d_model=arch.d_model, d_kv=arch.d_kv, d_ff=arch.d_ff,
        num_layers=arch.num_layers, num_decoder_layers=arch.num_decoder_layers, num_heads=arch.num_heads,
        relative_attention_num_buckets=arch.relative_attention_num_buckets,
        relative_attention_max_distance=arch.relative_attention_max_distance,
        dropout_rate=arch.dropout_rate, feed_forward_proj=arch.feed_forward_proj,
        initializer_factor=arch.initializer_factor, tie_word_embeddings=False,
        pad_token_id=ids["pad"], eos_token_id=ids["eos"], decoder_start_token_id=ids["start"],
    )


def untie_lm_head(model, factor: float = 1.0) -> None:
    """Give an (M)T5 model its own LM head, as mT5 / T5 v1.1 have.

    Some transformers versions tie ``lm_head`` to the input embedding whatever the config
    says; a checkpoint holding a different ``lm_head`` then loads untied. The head is
    initialized like Mesh TensorFlow's untied logits layer, N(0, factor / sqrt(d_model)),
    so the first loss is about ln(vocab size).
    """
    weight = torch.empty_like(model.shared.weight).normal_(0.0, factor * model.config.d_model ** -0.5)
    model.lm_head.weight = torch.nn.Parameter(weight)
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        tied.pop("lm_head.weight", None)


def build_t5(arch: T5Arch, tokenizer):
    """A fresh MT5ForConditionalGeneration with an untied LM head."""
    from transformers import MT5ForConditionalGeneration

    model = MT5ForConditionalGeneration(t5_config(arch, tokenizer))
    untie_lm_head(model, arch.initializer_factor)
    return model


def t5_generation_config(tokenizer, max_new_tokens: int):
    from transformers import GenerationConfig

    ids = t5_special_ids(tokenizer)
    return GenerationConfig(decoder_start_token_id=ids["start"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                            max_new_tokens=max_new_tokens)


def t5_train_flops(model, batch: dict, cache: dict) -> float:
    """6 x (encoder matmul parameters x source tokens + decoder and LM-head parameters x target tokens).

    Embedding lookups are not matmuls; the encoder never sees target tokens nor the decoder
    source tokens, so 6 x all parameters x all tokens would double count. ``cache`` keeps
    the parameter split per model object (it changes after growth).
    """
    if cache.get("model") is not model:
        size = lambda p: getattr(p, "ds_numel", p.numel())          # ZeRO-3 partitions parameters
        cache["model"] = model
        cache["enc"] = sum(size(p) for n, p in model.named_parameters() if n.startswith("encoder.block"))
        cache["dec"] = sum(size(p) for n, p in model.named_parameters()
                           if n.startswith("decoder.block") or n.startswith("lm_head"))
    src = int(batch["attention_mask"].sum())
    tgt = int((batch["labels"] != -100).sum())
    return 6.0 * (cache["enc"] * src + cache["dec"] * tgt)


def fuse_gelu(model: torch.nn.Module) -> int:
    """``train.fused_gelu``: every ``gelu_new`` activation (T5 v1.1 / mT5's FFN) becomes torch's
    single tanh-GELU kernel, in place; returns how many. The same formula, rounded once instead of
    after each of its eight elementwise ops: forward + backward 2.2x faster on CPU in bf16
    (BENCHMARKS.md), and closer to the exact value. No parameters: saved models are unchanged."""
    from transformers.activations import NewGELUActivation

    n = 0
    for m in model.modules():
        if type(m) is NewGELUActivation:
            m.__class__ = _fused_gelu_class()
            n += 1
    return n


def fuse_rms_norm(model: torch.nn.Module) -> int:
    """``train.fused_rms_norm``: every T5 / mT5 layer norm (an RMS norm) computed by ``_RMSNorm``, in
    place; returns how many. Transformers' is eight elementwise ops and their autograd nodes, about
    twenty passes over the activations forward and backward; ``_RMSNorm`` makes ten: 2x faster on
    CPU (1.9 -> 0.9 ms at 1,900 x 256, 22 norms per step of the bench's T5). The same values to
    float rounding (float32 inside, as transformers). No parameters change."""
    n = 0
    for m in model.modules():
        if type(m).__name__ in ("T5LayerNorm", "MT5LayerNorm") and hasattr(m, "variance_epsilon"):
            m.__class__ = _fused_rms_norm_class(type(m))
            n += 1
    return n


class _RMSNorm(torch.autograd.Function):
    """``weight * (x * rsqrt(mean(x**2) + eps))`` in float32, as T5's layer norm computes it (and, with
    bf16 / fp16 weights, the normalised x rounded to the weights' dtype first). Saves the normalised
    x and the row scales; the backward is ``gx = r (a - xn mean(a xn))``, ``a = gy w``, and
    ``gw = sum(gy xn)`` over the rows, in float32."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        xf = x.float()
        d = x.shape[-1]
        r = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_().div_(d).add_(eps).rsqrt_()
        xn = xf * r
        half = weight.dtype in (torch.float16, torch.bfloat16)
        ctx.save_for_backward(xn, r, weight)
        ctx.x_dtype = x.dtype
        return xn.to(weight.dtype) * weight if half else xn * weight

    @staticmethod
    def backward(ctx, grad):
        xn, r, weight = ctx.saved_tensors
        g = grad.float()
        a = g * weight.float()
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (g * xn).reshape(-1, xn.shape[-1]).sum(0).to(weight.dtype)
        mean = torch.linalg.vecdot(a, xn, dim=-1).unsqueeze(-1).div_(xn.shape[-1])
        grad_x = torch.addcmul(a, xn, mean, value=-1).mul_(r)
        return grad_x.to(ctx.x_dtype), grad_weight, None


@functools.cache
def _fused_rms_norm_class(base: type) -> type:
    class FusedRMSNorm(base):
        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)

    FusedRMSNorm.__name__ = FusedRMSNorm.__qualname__ = f"Fused{base.__name__}"
    return FusedRMSNorm


def relative_bias_by_offset(model: torch.nn.Module) -> int:
    """``train.relative_bias_by_offset``: T5's relative position bias built from its ``q + k - 1``
    distinct offsets instead of its ``q x k`` pairs, in place; returns how many attentions.

    T5 buckets every (query, key) pair's offset, looks each up in the bias table and returns a
    permuted view; its backward scatters ``q x k x heads`` gradients into the 32-row table (an
    embedding backward over 225k indices at 474 tokens): 18.8 ms for an encoder's bias, forward and
    backward, on CPU. The bias depends only on ``key - query``, so here each offset is bucketed and
    looked up once and the ``(heads, q, k)`` bias is a flipped sliding window over those values
    (contiguous, which the CPU attention adds fastest); the backward sums along the diagonals, in
    float32. The same values exactly; in bf16 the table's gradient is also far closer to the exact
    one (BENCHMARKS.md). No parameters change.
    Generation with a cache (an offset from past tokens) keeps transformers' own computation."""
    n = 0
    for m in model.modules():
        if getattr(m, "has_relative_attention_bias", False) and hasattr(m, "compute_bias") \
                and not getattr(m, "_bias_by_offset", False):
            m.__class__ = _bias_by_offset_class(type(m))
            n += 1
    return n


def bias_by_offset(model: torch.nn.Module) -> bool:
    """Whether every relative position bias of ``model`` is built by ``relative_bias_by_offset``."""
    biases = [m for m in model.modules() if getattr(m, "has_relative_attention_bias", False)]
    return all(getattr(m, "_bias_by_offset", False) for m in biases)


_OFFSETS_ONLY = contextvars.ContextVar("relative_bias_offsets_only", default=False)


@contextlib.contextmanager
def bias_offsets_only():
    """Within this block a by-offset bias (``relative_bias_by_offset``) is handed on as its offsets
    alone: an empty ``(1, heads, 0, 0)`` tensor carrying ``_offset_values``. For an attention that
    reads nothing else (a flattened packed batch's rows, ``pretrain.dropout._on_rows``), the full
    ``(heads, N, N)`` bias over the flat sequence was a flip and a copy built for nothing: 4 x 1,984²
    at the bench's T5, ~3 % of its step. Anything that adds the empty bias to scores fails loudly."""
    token = _OFFSETS_ONLY.set(True)
    try:
        yield
    finally:
        _OFFSETS_ONLY.reset(token)


@functools.cache
def _bias_by_offset_class(base: type) -> type:
    class BiasByOffset(base):
        _bias_by_offset = True

        def compute_bias(self, query_length, key_length, device=None, past_seen_tokens=0):
            if not isinstance(past_seen_tokens, int) or past_seen_tokens != 0:
                return super().compute_bias(query_length, key_length, device=device, past_seen_tokens=past_seen_tokens)
            if device is None:
                device = self.relative_attention_bias.weight.device
            offsets = torch.arange(1 - query_length, key_length, dtype=torch.long, device=device)   # key - query
            buckets = self._relative_position_bucket(offsets, bidirectional=not self.is_decoder,
                                                     num_buckets=self.relative_attention_num_buckets,
                                                     max_distance=self.relative_attention_max_distance)
            weight = self.relative_attention_bias.weight
            # In float32, so that the backward's sums (along each diagonal, then into each bucket's row)
            # accumulate in float32: transformers' bf16 embedding backward sums all q x k terms in bf16
            wide = torch.promote_types(weight.dtype, torch.float32)
            if hasattr(weight, "ds_id"):      # ZeRO-3: the module's own forward gathers a partitioned table
                values = self.relative_attention_bias(buckets).to(wide).t()
            else:
                values = torch.nn.functional.embedding(buckets, weight.to(wide)).t()   # (heads, q + k - 1)
            if _OFFSETS_ONLY.get():
                bias = values.new_empty((1, values.shape[0], 0, 0), dtype=weight.dtype)
                bias._offset_values = (values, query_length)
                return bias
            # windows[h, s, j] = values[h, s + j], the offset j - (q - 1 - s): row s is query q - 1 - s
            windows = values.unfold(1, key_length, 1).flip(1)
            bias = windows.to(weight.dtype, memory_format=torch.contiguous_format).contiguous().unsqueeze(0)
            bias._offset_values = (values, query_length)    # flattened packed rows read their corner from these
            return bias

    BiasByOffset.__name__ = BiasByOffset.__qualname__ = f"{base.__name__}ByOffset"
    return BiasByOffset


@functools.cache
def _fused_gelu_class():
    from transformers.activations import NewGELUActivation

    class FusedGELUTanh(NewGELUActivation):
        """``gelu_new`` as ``F.gelu(x, approximate="tanh")`` (``fuse_gelu``)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.gelu(x, approximate="tanh")
    return FusedGELUTanh
