"""Masked language modeling with mask-proposal sampling (MAP-Net).

BERT pretraining masks positions uniformly at random; the loss is an estimate
whose variance comes partly from the data and partly from *which* positions
were masked. MAP-Net reduces the second part by importance sampling: masked
positions are drawn from a proposal q that favours positions with large
gradient contribution, and each drawn position's loss is reweighted so that
the estimate still targets the uniform-masking objective. q comes from a small
proposal network trained jointly to predict each position's gradient norm
(or loss) from the input.

Definitions (one packed row; a "unit" is a token, or a jieba word with
``whole_word``; n maskable units, budget k = max(1, round(mask_prob * n))):

* ``l_i(M)`` is the MLM loss of unit i (mean cross-entropy over its tokens)
  when the set M of units is corrupted (80% [MASK] / 10% random / 10% kept).
* Target objective: ``J = (1/n) sum_i E_C[l_i({i} + C)]``: unit i is uniform,
  C is the *context* (the other units masked at the same time). With C a
  uniform (k-1)-subset of the rest this is exactly BERT's
  ``E_{M uniform k-subset}[(1/k) sum_{i in M} l_i(M)]``.
* ``sampling: uniform``: M is a uniform k-subset (without replacement);
  estimate ``(1/k) sum_{i in M} l_i(M)``. Exactly unbiased for J (BERT).
* ``sampling: proposal``: k i.i.d. draws t_1..t_k from
  ``q_mix = (1 - uniform_mix) * q + uniform_mix / n``; M = the distinct draws;
  estimate ``(1/k) sum_j w(t_j) l_{t_j}(M)`` with ``w(i) = (1/n) / q_mix(i)``.
  Its expectation is ``(1/n) sum_i E[l_i({i} + C_q)]`` with C_q the other
  draws: the scored unit is exactly uniform, the context follows q_mix.
  So it is exactly unbiased for J whenever a unit's loss does not depend on
  which other units are masked (single-unit masking, k = 1, or a context-free
  model), which tests/test_mlm_proposal.py checks by Monte Carlo against exact
  values. No per-unit weighting can make the context uniform too: a
  fixed-size design whose co-masked set is uniform given each member must be
  uniform itself. bench/mask_variance.py measures that context effect.

Rows of a batch are pooled as ``sum_rows sum_j w l / sum_rows k`` (k is fixed
per row, so the pooled estimate stays unbiased); ``w`` is a constant for the
encoder's gradient. The proposal net reads the *detached* input embeddings
(it never changes the encoder) and regresses ``log(target + eps)`` on the
masked tokens, target = ||softmax(z) - onehot(y)|| (the loss gradient norm at
the logits, the paper's gradient-norm proxy) or the cross-entropy; unit scores
are the log of the mean predicted target, ``q = softmax(scores)`` over units.

Training data: the cleaned corpus shards (``data.clean_dir``); each
micro-batch's documents become ``[CLS] doc [SEP]`` segments packed into rows of
``train.max_source_len`` tokens, none attending another (``pack_rows``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForMaskedLM, RoFormerConfig, RoFormerForMaskedLM

from pipeline.typed_config import InvalidValue, build
from pretrain import lm_loss
from pretrain.models import EncoderArch, encoder_config_kwargs
from pretrain.objectives.base import (Objective, ObjectiveSpec, Options, mask_budget, matmul_params, pad_batch,
                                     uniform_order)
from pretrain.packing import attention_mask_4d, encoder_kwargs, pack_sequences, window_segments


@dataclass
class MLMProposalConfig(Options):
    """The ``objective:`` section of configs/mlm-proposal.yaml."""
    encoder: Literal["bert", "roformer"] = "bert"
    mask_prob: float = 0.15             # budget: k = round(mask_prob * maskable units) per row
    replace_mask: float = 0.8           # of the selected tokens: [MASK] ...
    replace_random: float = 0.1         # ... a random token; the rest stay unchanged
    whole_word: bool = False            # units are jieba words instead of tokens
    sampling: Literal["uniform", "proposal"] = "proposal"   # uniform: plain BERT masking, proposal net not run
    uniform_mix: float = 0.5            # q_mix = (1 - w) q + w uniform; bounds weights by 1 / w
    proposal_target: Literal["grad_norm", "loss"] = "grad_norm"  # what the proposal net predicts
    proposal_dim: int = 64
    proposal_layers: int = 1
    proposal_heads: int = 2
    proposal_weight: float = 1.0        # weight of the proposal regression in the total loss
    max_rows: int = 0                   # packed rows per micro-batch (0 = train.micro_batch_size)
    eval_seed: int = 1234               # fixed masks for validation

    def __post_init__(self):
        if not 0 < self.mask_prob < 1:
            raise InvalidValue("mask_prob", f"must be in (0, 1), got {self.mask_prob}")
        if not 0 < self.uniform_mix <= 1:
            raise InvalidValue("uniform_mix", f"must be in (0, 1], got {self.uniform_mix}")
        if self.replace_mask < 0 or self.replace_random < 0 or self.replace_mask + self.replace_random > 1:
            raise InvalidValue("replace_random", "plus objective.replace_mask must be in [0, 1]")


# ---------------------------------------------------------------- packing
def pack_rows(docs: list[list[int]], seq_len: int, cls_id: int, sep_id: int, pad_id: int,
              max_rows: int = 0, doc_units: list[list[int]] | None = None, packing: bool = True) -> dict[str, torch.Tensor]:
    """Documents as ``[CLS] piece [SEP]`` segments packed into rows of seq_len tokens (``pretrain.packing``:
    no segment attends another, positions restart in each).

    A document longer than a row is cut into pieces of seq_len - 2 tokens; pieces are packed
    first-fit, and with ``max_rows`` what does not fit is left out. Returns input_ids,
    attention_mask, segment_ids, position_ids and unit_ids, which numbers each row's maskable
    units 0..n-1 (-1 on [CLS]/[SEP]/pad). ``doc_units`` gives each token's word index in its
    document (whole-word masking); a word cut by a piece boundary becomes two units.
    ``packing=False``: one piece per (padded) row.
    """
    body = seq_len - 2
    pieces, words = [], []
    for d, toks in enumerate(docs):
        units = list(doc_units[d]) if doc_units is not None else list(range(len(toks)))
        for start in range(0, len(toks), body):
            pieces.append([cls_id, *toks[start:start + body], sep_id])
            words.append([-1, *units[start:start + body], -1])
    out = pack_sequences(pieces, seq_len, pad_id, max_rows, extra={"words": words}, packing=packing)
    word, seg = out.pop("words"), out["segment_ids"]
    word = word.masked_fill(seg < 0, -1)
    maskable = word >= 0
    new_unit = maskable.clone()
    new_unit[:, 1:] &= (word[:, 1:] != word[:, :-1]) | (seg[:, 1:] != seg[:, :-1])
    out["unit_ids"] = torch.where(maskable, new_unit.long().cumsum(dim=1) - 1, torch.full_like(word, -1))
    return out


def word_index(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """For each token (by its character offsets), the index of the jieba word it starts in."""
    from tokenizer.jieba_util import cut

    starts, pos = [], 0
    for w in cut(text):
        starts.append(pos)
        pos += len(w)
    out, j = [], 0
    for begin, _ in offsets:
        while j + 1 < len(starts) and starts[j + 1] <= begin:
            j += 1
        out.append(j)
    return out


# ---------------------------------------------------------------- mask sampling
def unit_budget(unit_ids: torch.Tensor, mask_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the number n of maskable units (ids 0..n-1, -1 elsewhere) and the budget round(mask_prob n)."""
    n_units = (unit_ids.amax(dim=1) + 1).clamp_min(0)
    return n_units, mask_budget(n_units, mask_prob)


def unit_log_scores(token_scores: torch.Tensor, unit_ids: torch.Tensor, n_max: int) -> torch.Tensor:
    """(B, n_max) log of the mean exp(token score) over each unit's tokens; -inf where no unit."""
    valid = unit_ids >= 0
    idx = unit_ids.clamp(min=0)
    top = token_scores.masked_fill(~valid, -1e30).amax(dim=1, keepdim=True).detach()
    e = torch.exp(token_scores - top) * valid
    total = torch.zeros(unit_ids.shape[0], n_max, dtype=e.dtype, device=e.device).scatter_add(1, idx, e)
    count = torch.zeros_like(total).scatter_add(1, idx, valid.to(e.dtype))
    return torch.where(count > 0, torch.log(total.clamp_min(1e-30) / count.clamp_min(1)) + top, -math.inf)


def proposal_distribution(unit_scores: torch.Tensor, n_units: torch.Tensor, uniform_mix: float) -> torch.Tensor:
    """q_mix = (1 - w) softmax(scores) + w / n over each row's n units (zero beyond)."""
    present = torch.arange(unit_scores.shape[1], device=unit_scores.device)[None, :] < n_units[:, None]
    q = torch.softmax(unit_scores.masked_fill(~present, -math.inf), dim=1)
    uniform = present.to(q.dtype) / n_units.clamp_min(1)[:, None].to(q.dtype)
    return ((1 - uniform_mix) * q + uniform_mix * uniform).masked_fill(~present, 0.0)


def draw_units(q_mix: torch.Tensor | None, n_units: torch.Tensor, budget: torch.Tensor, n_max: int,
               generator: torch.Generator | None = None, kmax: int | None = None):
    """Sample each row's scored units: returns (draws, valid, weights), each (B, max budget).

    ``q_mix=None``: a uniform k-subset without replacement, weights 1 (BERT).
    Otherwise k i.i.d. draws from q_mix (inverse CDF on CPU uniforms, so the
    trainer's saved CPU RNG state makes runs resumable on any device), weights
    (1/n) / q_mix. Random numbers come from ``generator`` or torch's global RNG. ``kmax``: the
    draws' width, at least every row's budget (default: the largest, read from the device).
    """
    B, device = n_units.shape[0], n_units.device
    if kmax is None:
        kmax = int(budget.max().item()) if B else 0
    valid = torch.arange(kmax, device=device)[None, :] < budget[:, None]
    if q_mix is None:
        present = torch.arange(n_max, device=device)[None, :] < n_units[:, None]
        draws = uniform_order(present, generator)[:, :kmax]
        return draws, valid, torch.ones(B, kmax, device=device)
    u = torch.rand(B, kmax, generator=generator, dtype=torch.float64).to(device)
    cdf = q_mix.double().cumsum(dim=1)
    cdf = cdf / cdf[:, -1:].clamp_min(1e-300)
    draws = torch.searchsorted(cdf, u).clamp(max=n_max - 1)
    draws = torch.minimum(draws, (n_units - 1).clamp_min(0)[:, None])
    q_drawn = q_mix.gather(1, draws)
    weights = (1.0 / (n_units[:, None].to(q_mix.dtype) * q_drawn.clamp_min(1e-12))).detach()
    return draws, valid, weights


def corrupt(input_ids: torch.Tensor, unit_ids: torch.Tensor, draws: torch.Tensor, valid: torch.Tensor,
            oc: MLMProposalConfig, mask_id: int, random_low: int, vocab_size: int,
            generator: torch.Generator | None = None):
    """Corrupt every token of the drawn units (80/10/10); returns (corrupted ids, selected-token mask)."""
    B, L = input_ids.shape
    device = input_ids.device
    chosen = torch.zeros(B, L + 1, dtype=torch.bool, device=device)      # unit ids are < L; the last is a sink
    chosen.scatter_(1, torch.where(valid, draws, chosen.shape[1] - 1), True)
    chosen[:, -1] = False
    selected = (unit_ids >= 0) & chosen.gather(1, unit_ids.clamp(min=0))
    r = torch.rand(B, L, generator=generator).to(device)
    rand_tok = torch.randint(random_low, vocab_size, (B, L), generator=generator).to(device)
    out = input_ids.clone()
    out = torch.where(selected & (r < oc.replace_mask), torch.full_like(out, mask_id), out)
    use_random = selected & (r >= oc.replace_mask) & (r < oc.replace_mask + oc.replace_random)
    out = torch.where(use_random, rand_tok, out)
    return out, selected


def mask_slots(unit_ids: torch.Tensor, mask_prob: float) -> torch.Tensor:
    """(2, S) the (row, rank) of the LM head's slots for a batch's masked tokens, sized on the CPU.

    Masks are drawn on the device (they need the proposal's scores), so how many tokens they
    select is known there only; a GPU step that sized the head by it would wait for the device.
    Row b gets as many slots as the tokens of its ``budget`` longest units: any draw of budget
    units selects at most that many. With token units that is the budget itself, the selected
    count or a few % more (i.i.d. proposal draws repeat); with jieba words it was 2.2-2.4x the
    selected tokens on zhwiki (BENCHMARKS.md, stop 50), so the collators give slots for token
    units only.
    """
    B, L = unit_ids.shape
    at = torch.where(unit_ids >= 0, unit_ids, L)
    lengths = torch.zeros(B, L + 1, dtype=torch.long).scatter_add_(1, at, torch.ones_like(at))[:, :L]
    longest = lengths.sort(dim=1, descending=True).values.cumsum(dim=1)
    budget = unit_budget(unit_ids, mask_prob)[1]
    bound = torch.where(budget > 0, longest.gather(1, (budget - 1).clamp_min(0)[:, None])[:, 0], 0)
    rows = torch.repeat_interleave(torch.arange(B), bound)
    rank = torch.arange(rows.numel()) - torch.repeat_interleave(bound.cumsum(0) - bound, bound)
    return torch.stack([rows, rank])


def slot_positions(selected: torch.Tensor, slots: torch.Tensor):
    """((rows, columns), live) of the head's slots: slot j of row b holds row b's j-th selected
    column (row-major, as a boolean selection orders them); slots past a row's count are not live."""
    rows, rank = slots
    first = torch.argsort((~selected).to(torch.uint8), dim=1, stable=True)    # selected columns first, in order
    return (rows, first[rows, rank]), rank < selected.sum(dim=1)[rows]


def masked_lm_logits(mlm, input_ids, attention_mask, at, segment_ids=None, position_ids=None):
    """Logits at the masked positions only (the vocabulary projection is the expensive part);
    ``at``: a boolean mask of them, or (rows, columns)."""
    kw = encoder_kwargs(mlm, attention_mask, segment_ids, position_ids)
    hidden = mlm.base_model(input_ids=input_ids, **kw).last_hidden_state
    return mlm.cls(hidden[at])


def estimate_mlm_loss(mlm, input_ids, attention_mask, unit_ids, token_scores, oc: MLMProposalConfig,
                      mask_id: int, random_low: int, sampling: str | None = None,
                      generator: torch.Generator | None = None, with_grad_norm: bool = True,
                      segment_ids=None, position_ids=None, mask_slots=None) -> dict:
    """Sample masks, run the encoder, return the (importance-weighted) MLM loss estimate and its parts.

    Sizes come from the row length, never from the device. The LM head runs on the selected
    tokens: on a CPU, exactly those (``nonzero``); off it, on the collator's ``mask_slots`` when
    it gives them, the unfilled ones counting zero, so a GPU step reads nothing back (else
    ``nonzero``'s size is the one read).

    Keys: ``loss`` (pooled estimate), ``row_estimate`` (B,), ``plain_loss``
    (unweighted token mean), per head row ``token_ce`` / ``grad_norm`` / ``live`` (whether it
    holds a selected token) and ``at`` (where it is), ``selected`` (B, L), ``accuracy``,
    ``q_mix``, per draw ``weights`` / ``valid`` / ``drawn_loss``, per row ``n_units`` / ``budget``.
    """
    sampling = sampling or oc.sampling
    L = unit_ids.shape[1]
    n_max = L                                           # unit ids are < L
    n_units, budget = unit_budget(unit_ids, oc.mask_prob)
    kmax = max(1, round(oc.mask_prob * L))              # mask_budget's rounding; >= every row's budget
    q_mix = None
    if token_scores is not None:
        q_mix = proposal_distribution(unit_log_scores(token_scores.float(), unit_ids, n_max), n_units,
                                      oc.uniform_mix)
    draws, valid, weights = draw_units(q_mix if sampling == "proposal" else None, n_units, budget, n_max, generator,
                                       kmax)
    vocab_size = mlm.config.vocab_size
    corrupted, selected = corrupt(input_ids, unit_ids, draws, valid, oc, mask_id, random_low, vocab_size, generator)
    if mask_slots is not None and lm_loss.index_free(input_ids.device):
        at, live = slot_positions(selected, mask_slots)
    else:                       # one read of the count (nonzero's size), nothing on a CPU
        at = selected.nonzero(as_tuple=True)
        live = torch.ones_like(at[0], dtype=torch.bool)
    rows = at[0]
    logits = masked_lm_logits(mlm, corrupted, attention_mask, at, segment_ids, position_ids).float()
    labels = input_ids[at]
    token_ce = F.cross_entropy(logits, labels.masked_fill(~live, -100), reduction="none")   # 0 where not live
    n_live = live.sum().clamp_min(1)
    # Unit loss = mean CE over the unit's selected tokens (a head row that is not live adds to a sink).
    flat = rows * (n_max + 1) + torch.where(live, unit_ids[at], n_max)
    size = unit_ids.shape[0] * (n_max + 1)
    unit_sum = torch.zeros(size, device=logits.device).index_add(0, flat, token_ce)
    unit_cnt = torch.zeros(size, device=logits.device).index_add(0, flat, live.float())
    unit_loss = (unit_sum / unit_cnt.clamp_min(1)).view(-1, n_max + 1)
    drawn_loss = unit_loss.gather(1, draws) * valid
    row_total = (weights * drawn_loss).sum(dim=1)
    loss = row_total.sum() / budget.sum().clamp_min(1)
    with torch.no_grad():
        grad_norm = None
        if with_grad_norm:   # the proposal's regression target; a full softmax over the vocabulary
            probs = torch.softmax(logits, dim=-1)
            grad_norm = (probs - F.one_hot(labels, vocab_size).to(probs.dtype)).norm(dim=-1)
        accuracy = ((logits.argmax(-1) == labels) & live).sum() / n_live
    return {"loss": loss, "row_estimate": row_total / budget.clamp_min(1), "plain_loss": token_ce.sum() / n_live,
            "token_ce": token_ce, "grad_norm": grad_norm, "live": live, "at": at, "selected": selected,
            "accuracy": accuracy, "q_mix": q_mix, "weights": weights, "valid": valid, "drawn_loss": drawn_loss,
            "n_units": n_units, "budget": budget}


# ---------------------------------------------------------------- the proposal network
class MaskProposalNet(nn.Module):
    """MAP-Net: a small Transformer over the (detached) input embeddings; one score per token.

    The score predicts ``log(target + eps)`` for the token if it were masked,
    target = gradient norm at the logits or cross-entropy.
    """

    def __init__(self, d_in: int, dim: int = 64, layers: int = 1, heads: int = 2, max_len: int = 512):
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, dim))
        self.pos = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, 1)
        nn.init.zeros_(self.out.weight)   # start uniform: q = uniform until the net has learned something
        nn.init.constant_(self.out.bias, math.log(0.5))

    def forward(self, embeddings: torch.Tensor, attention_mask: torch.Tensor, segment_ids=None,
                position_ids=None) -> torch.Tensor:
        if position_ids is None:
            position_ids = torch.arange(embeddings.shape[1], device=embeddings.device)[None]
        h = self.inp(embeddings) + self.pos(position_ids)
        mask = None
        if segment_ids is not None:     # packed rows: True = may not attend (nn.MultiheadAttention's convention)
            heads = self.body.layers[0].self_attn.num_heads
            mask = ~attention_mask_4d(segment_ids)[:, 0].repeat_interleave(heads, dim=0)
        h = self.body(h, mask=mask, src_key_padding_mask=attention_mask == 0)
        return self.out(h).squeeze(-1)


class MaskedLMWithProposal(nn.Module):
    """What DeepSpeed trains: the Hugging Face masked LM plus the mask proposal net."""

    def __init__(self, mlm, proposal: MaskProposalNet, oc: MLMProposalConfig, mask_id: int, random_low: int):
        super().__init__()
        self.mlm, self.proposal = mlm, proposal
        self.oc, self.mask_id, self.random_low = oc, mask_id, random_low

    def forward(self, input_ids, attention_mask, unit_ids, segment_ids=None, position_ids=None,
                sampling: str | None = None, generator: torch.Generator | None = None, mask_slots=None):
        packed = {"segment_ids": segment_ids, "position_ids": position_ids}
        if (sampling or self.oc.sampling) == "uniform":
            # Uniform masks need no proposal: skip its forward pass, its regression and the
            # full-vocabulary softmax of its target (plain MLM speed).
            return estimate_mlm_loss(self.mlm, input_ids, attention_mask, unit_ids, None, self.oc, self.mask_id,
                                     self.random_low, "uniform", generator, with_grad_norm=False,
                                     mask_slots=mask_slots, **packed)
        emb = self.mlm.get_input_embeddings()(input_ids).detach()
        scores = self.proposal(emb, attention_mask, **packed)
        out = estimate_mlm_loss(self.mlm, input_ids, attention_mask, unit_ids, scores.detach(), self.oc,
                                self.mask_id, self.random_low, sampling, generator,
                                with_grad_norm=self.oc.proposal_target == "grad_norm", mask_slots=mask_slots,
                                **packed)
        target = out["grad_norm"] if self.oc.proposal_target == "grad_norm" else out["token_ce"].detach()
        live = out["live"]
        error = (scores[out["at"]] - torch.log(target + 1e-3)).square()
        out["proposal_loss"] = torch.where(live, error, 0.0).sum() / live.sum().clamp_min(1)
        out["scores"] = scores
        return out


def q_stats(out: dict) -> dict[str, float]:
    """Entropy of q_mix relative to uniform (1 = uniform) and the largest importance weight."""
    q, n = out["q_mix"], out["n_units"].double()
    if q is None:
        return {}
    ent = -(q.double() * torch.log(q.double().clamp_min(1e-30))).sum(dim=1)
    keep = n > 1
    rel = torch.where(keep, ent / torch.log(n.clamp(min=2)), torch.zeros_like(ent)).sum() / keep.sum().clamp(min=1)
    rel = torch.where(keep.any(), rel, torch.ones_like(rel))
    w = out["weights"].masked_fill(~out["valid"], 0.0)
    top = w.max() if w.numel() else torch.zeros(())
    return {"q_entropy": rel, "max_weight": torch.where(out["valid"].any(), top, torch.ones_like(top))}


# ---------------------------------------------------------------- the objective
class MLMProposalObjective(Objective):
    spec = ObjectiveSpec(
        name="mlm-proposal", arch=EncoderArch, options=MLMProposalConfig, data="clean", eval_tasks=("mlm", "sts"),
        finetune_suite=("thucnews_titles", "chnsenticorp", "lcqmc", "cmrc2018"),
        intended_use="Chinese understanding: fine-tune for classification, matching or sequence labelling, "
                     "or use as a fill-mask model.")

    @classmethod
    def options_from_hf(cls, config) -> dict:
        if config.model_type not in ("bert", "roformer"):
            from pretrain.init import InitError
            raise InitError(f"mlm-proposal starts from a BERT or RoFormer masked LM, not model_type '{config.model_type}'")
        return {"encoder": config.model_type}

    def init_state(self, state: dict, config) -> dict:
        """A BERT/RoFormer masked LM (or bare encoder) under ``mlm.``; the proposal net starts fresh."""
        from pretrain.init import map_prefixes
        body = config.model_type
        return map_prefixes(state, [(f"{body}.", f"mlm.{body}."), ("cls.predictions.", "mlm.cls.predictions."),
                                    ("embeddings.", f"mlm.{body}.embeddings."), ("encoder.", f"mlm.{body}.encoder.")],
                            drop=(f"{body}.pooler.", "pooler.", "cls.seq_relationship."))

    def __init__(self, cfg, tokenizer=None):
        super().__init__(cfg, tokenizer)
        self.oc = self.opts
        self.random_low = max(self.tokenizer.all_special_ids) + 1     # random replacements skip specials/sentinels

    # -- model -------------------------------------------------------------
    def model_config(self):
        a, t, tok = self.cfg.arch, self.cfg.train, self.tokenizer
        common = encoder_config_kwargs(a, len(tok), tok.pad_token_id, max(512, t.max_source_len),
                                       tok.bos_token_id, tok.eos_token_id)
        if self.oc.encoder == "roformer":
            return RoFormerConfig(embedding_size=a.d_model, **common)
        return BertConfig(**common)

    def build_mlm(self):
        cls = RoFormerForMaskedLM if self.oc.encoder == "roformer" else BertForMaskedLM
        return cls(self.model_config())

    def build_model(self) -> MaskedLMWithProposal:
        oc = self.oc
        proposal = MaskProposalNet(self.cfg.arch.d_model, oc.proposal_dim, oc.proposal_layers, oc.proposal_heads,
                                   max(512, self.cfg.train.max_source_len))
        return MaskedLMWithProposal(self.build_mlm(), proposal, oc, self.tokenizer.mask_token_id, self.random_low)

    # -- data --------------------------------------------------------------
    def collate(self, records: list[dict]) -> dict[str, torch.Tensor]:
        tok, t = self.tokenizer, self.cfg.train
        texts = [r["text"] for r in records]
        enc = tok(texts, add_special_tokens=False, return_offsets_mapping=self.oc.whole_word)
        units = None
        if self.oc.whole_word:
            units = [word_index(text, offs) for text, offs in zip(texts, enc["offset_mapping"])]
        out = pack_rows(enc["input_ids"], t.max_source_len, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id,
                        self.oc.max_rows or t.micro_batch_size, units, t.packing)
        if not self.oc.whole_word:
            out["mask_slots"] = mask_slots(out["unit_ids"], self.oc.mask_prob)
        return out

    def train_flops(self, model, batch: dict) -> float:
        """6 x (the encoder's matmul parameters x tokens + the LM head's x the masked tokens it runs
        on), plus the proposal net's x tokens when it runs (sampling: proposal; uniform sampling
        skips it, so equal-compute comparisons do not charge it). Masked tokens: each row's budget
        of units (round(mask_prob x units)) times the row's mean unit length in tokens."""
        mlm = model.mlm
        head = matmul_params(mlm.cls)
        units = batch["unit_ids"]
        n_units, budget = unit_budget(units, self.oc.mask_prob)
        unit_tokens = (units >= 0).sum(dim=1)
        masked = float((budget * unit_tokens / n_units.clamp_min(1)).sum())
        proposal = matmul_params(model.proposal) if self.oc.sampling == "proposal" else 0
        tokens = self.tokens_in(batch)
        return 6.0 * ((matmul_params(mlm, skip=(mlm.cls,)) + proposal) * tokens + head * masked)

    @classmethod
    def token_options(cls, cfg) -> dict:
        return {"whole_word": cfg.objective.whole_word}

    def collate_tokens(self, samples: list[dict], seed: int) -> dict[str, torch.Tensor]:
        """Rows [CLS] + a packed window, as pack_rows makes them; masks are drawn in the model (the
        proposal needs its scores), so this collator is deterministic and ``seed`` is unused."""
        tok = self.tokenizer
        cls, one = np.array([tok.cls_token_id]), np.ones(1, np.uint8)
        batch = pad_batch([np.concatenate([cls, s["ids"]]) for s in samples], tok.pad_token_id)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        units = mask.bool() & (ids != tok.sep_token_id)
        units[:, 0] = False                                            # [CLS]
        starts = units.clone()
        if self.oc.whole_word:   # a word starts where the shard says, and at the row start (a cut word: two units)
            flags = pad_batch([np.concatenate([one, s["starts"]]) for s in samples], 0)["input_ids"].bool()
            starts &= flags
            starts[:, 1] = units[:, 1]
        unit_ids = torch.where(units, starts.long().cumsum(dim=1) - 1, torch.full_like(ids, -1))
        out = {"input_ids": ids, "attention_mask": mask, "unit_ids": unit_ids}
        if not self.oc.whole_word:
            out["mask_slots"] = mask_slots(unit_ids, self.oc.mask_prob)
        if self.cfg.train.packing:        # a document attends only itself, as on the text path
            out.update(window_segments(ids, mask, tok.sep_token_id))
        return out

    def loss(self, model, batch: dict):
        """Training: the sampled, reweighted MLM estimate + proposal regression. Eval: uniform masks, fixed seed."""
        training = getattr(model, "training", True)
        if not training:
            gen = torch.Generator().manual_seed(self.oc.eval_seed)
            out = model(**batch, sampling="uniform", generator=gen)
            return out["loss"], {"mlm_acc": out["accuracy"].item()}
        out = model(**batch)
        total = out["loss"]
        terms = {"mlm_loss": out["loss"].detach(), "mlm_loss_plain": out["plain_loss"].detach(),
                 "mlm_acc": out["accuracy"],
                 "masked_frac": out["selected"].sum() / (batch["unit_ids"] >= 0).sum().clamp_min(1)}
        if "proposal_loss" in out:         # sampling: proposal
            total = total + self.oc.proposal_weight * out["proposal_loss"]
            terms["proposal_loss"] = out["proposal_loss"].detach()
        terms.update(q_stats(out))
        return total, terms

    # -- validation --------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, records: list[dict]) -> dict[str, float]:
        """Masked-token accuracy and loss under uniform masks (fixed seed) on held-out documents."""
        if not records:
            return {}
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in self.collate(records).items()}
        was_training = model.training
        model.eval()
        out = model(**batch, sampling="uniform", generator=torch.Generator().manual_seed(self.oc.eval_seed))
        model.train(was_training)
        return {"mlm_accuracy": out["accuracy"].item()}

    # -- export ------------------------------------------------------------
    def hf_parts(self, model: MaskedLMWithProposal) -> dict:
        return {"": model.mlm}

    def export(self, model: MaskedLMWithProposal, out_dir: str | Path) -> None:
        """A Hugging Face folder AutoModelForMaskedLM loads; the proposal net goes to mask_proposal/."""
        super().export(model, out_dir)
        from safetensors.torch import save_file
        sub = Path(out_dir) / "mask_proposal"
        sub.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.proposal.state_dict().items()},
                  str(sub / "model.safetensors"))
        (sub / "config.json").write_text(json.dumps({"d_in": self.cfg.arch.d_model, **asdict(self.oc),
                                                     "max_len": max(512, self.cfg.train.max_source_len)}, indent=1))


def load_proposal(export_dir: str | Path) -> tuple[MaskProposalNet, MLMProposalConfig]:
    """The MAP-Net saved next to an export (for analysis and continued training)."""
    from safetensors.torch import load_file
    sub = Path(export_dir) / "mask_proposal"
    meta = json.loads((sub / "config.json").read_text())
    oc = build(MLMProposalConfig, {k: v for k, v in meta.items() if k in MLMProposalConfig.__dataclass_fields__},
               str(sub / "config.json"), "objective.")
    net = MaskProposalNet(meta["d_in"], oc.proposal_dim, oc.proposal_layers, oc.proposal_heads, meta["max_len"])
    net.load_state_dict(load_file(str(sub / "model.safetensors")))
    return net, oc
