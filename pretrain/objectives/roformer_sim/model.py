"""RoFormer-Sim's network and losses: the UniLM mask, pooling, in-batch contrastive and CoSENT losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import RoFormerConfig, RoFormerForCausalLM
from transformers.utils import logging as hf_logging

from pretrain.packing import model_mask, segment_pool


def unilm_mask(token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Boolean (B, L, L): query i may attend key j iff j is source (type 0), or target with j <= i.

    Written as in bert4keras: with c = cumsum(token types), i attends j iff
    c[j] <= c[i]; padding keys are never attended.
    """
    c = torch.cumsum(token_type_ids, dim=1)
    allowed = c[:, None, :] <= c[:, :, None]
    return allowed & attention_mask[:, None, :].bool()


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L, L) boolean -> (B, 1, L, L) additive mask that RoFormer's attention adds to its scores."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]


def contrastive_loss(vectors: torch.Tensor, scale: float, anchors: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """In-batch InfoNCE: the first ``anchors`` = 2B rows are pairs, row i's positive being
    row (i + B) mod 2B; every other row, including any rows after the 2B (hard
    negatives), is a negative.

    Returns the loss and the accuracy of picking the partner (self-similarity excluded).
    """
    n = vectors.shape[0] if anchors is None else anchors
    v = F.normalize(vectors.float(), dim=-1)
    sims = scale * v[:n] @ v.T
    sims = sims.masked_fill(torch.eye(n, vectors.shape[0], dtype=torch.bool, device=v.device), float("-inf"))
    target = (torch.arange(n, device=v.device) + n // 2) % n
    return F.cross_entropy(sims, target), (sims.argmax(-1) == target).float().mean()


POOLINGS = ("mean", "cls", "first-last-avg")


def cosent_loss(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                scale: float) -> torch.Tensor:
    """CoSENT: log(1 + sum over row pairs (i, j) of one group with score_i > score_j of
    exp(scale * (cos_j - cos_i))). It ranks the pairs' cosines by their labels, which is what
    Spearman measures, and only compares rows of the same file (labels of different files
    are not on one scale). Zero-loss (log 1) when no such (i, j) exists.
    """
    cos = F.cosine_similarity(a.float(), b.float(), dim=-1) * scale
    diff = cos[None, :] - cos[:, None]                       # [i, j] = cos_j - cos_i
    valid = (scores[:, None] > scores[None, :]) & (groups[:, None] == groups[None, :])
    diff = diff.masked_fill(~valid, float("-inf"))
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), 0)


def pool(hidden: torch.Tensor | tuple, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vectors: the [CLS] state, the mean of the last states over positions where mask is 1,
    or ``first-last-avg`` (BERT-whitening / SimCSE's pooling): that mean taken over the average of the
    embedding output and the last layer, which keeps each token's own identity next to its context.

    ``hidden`` is the last (B, L, H) states, or all hidden states (embeddings first) for first-last-avg.
    """
    hidden = _pool_states(hidden, pooling)
    if pooling == "cls":
        return hidden[:, 0]
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def _pool_states(hidden: torch.Tensor | tuple, pooling: str) -> torch.Tensor:
    return (hidden[0] + hidden[-1]) / 2 if pooling == "first-last-avg" else hidden


def pool_segments(hidden: torch.Tensor | tuple, segment_ids: torch.Tensor, source: torch.Tensor, pooling: str,
                  n: int) -> torch.Tensor:
    """``pool`` per sequence of packed rows (``pretrain.packing``): (n, H) in sequence order; the [CLS]
    state is each segment's first, the means run over each segment's ``source`` positions."""
    return segment_pool(_pool_states(hidden, pooling), segment_ids, n, keep=source, first=pooling == "cls")


def row_segments(attention_mask: torch.Tensor) -> torch.Tensor:
    """Segment ids of unpacked rows: the row index on tokens, -1 on padding."""
    rows = torch.arange(attention_mask.shape[0], device=attention_mask.device)[:, None].expand_as(attention_mask)
    return torch.where(attention_mask.bool(), rows, torch.full_like(rows, -1))


def run_encoder(encoder, pooling: str, **inputs):
    """(states for ``pool``, last hidden state) of a RoFormerModel call; all layers only when pooling needs them."""
    out = encoder(**inputs, output_hidden_states=pooling == "first-last-avg")
    return (out.hidden_states if pooling == "first-last-avg" else out.last_hidden_state), out.last_hidden_state


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    v = F.normalize(vectors.float(), dim=-1)
    return v @ v.T


class SimModel(nn.Module):
    """The training module: a RoFormerForCausalLM run under the UniLM mask.

    Returns the sentence vectors of the sources (pooled as ``config.sentence_pooling``)
    and the LM logits at the requested positions only (a vocabulary-sized projection
    of every position would waste most of the step).
    """

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        hf_logging.set_verbosity_error()   # RoFormerForCausalLM warns when is_decoder=False; we pass our own mask
        self.lm = RoFormerForCausalLM(config)
        hf_logging.set_verbosity_warning()
        self.pooling = getattr(config, "sentence_pooling", "cls")

    def forward(self, input_ids, token_type_ids, attention_mask, label_positions=None, segment_ids=None,
                num_sequences: int | None = None):
        """Rows may hold several packed sequences (``segment_ids``); the UniLM mask then holds inside
        each, no sequence sees another, and the vectors come back one per sequence, in order."""
        if segment_ids is None:
            segment_ids = row_segments(attention_mask)
        mask = model_mask(self.lm, segment_ids, allowed=unilm_mask(token_type_ids, attention_mask))
        states, hidden = run_encoder(self.lm.roformer, self.pooling, input_ids=input_ids,
                                     token_type_ids=token_type_ids, attention_mask=mask)
        logits = None
        if label_positions is not None:
            logits = self.lm.cls(hidden[label_positions[0], label_positions[1]])
        source = (token_type_ids == 0) & (attention_mask == 1)
        n = num_sequences if num_sequences is not None else int(segment_ids.max()) + 1
        return pool_segments(states, segment_ids, source, self.pooling, n), logits
