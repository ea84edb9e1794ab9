"""Using a trained RoFormer-Sim: sentence vectors (``encode``) and similar-sentence generation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.objectives.roformer_sim.model import additive_mask, pool, run_encoder, unilm_mask


@torch.no_grad()
def encode(model, tokenizer, texts: list[str], batch_size: int = 64, max_len: int = 64) -> torch.Tensor:
    """Sentence vectors of ``[CLS] text [SEP]`` from a RoFormerModel (or a RoFormerForCausalLM's encoder),
    pooled as its ``config.sentence_pooling`` says ("cls" for configs that do not say)."""
    encoder = getattr(model, "roformer", model)
    device = next(encoder.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), encoder.config.hidden_size)
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in idx], max_length=max_len + 2, truncation=True, padding=True,
                          return_tensors="pt")
        mask = batch["attention_mask"].to(device)
        pooling = getattr(encoder.config, "sentence_pooling", "cls")
        states, _ = run_encoder(encoder, pooling, input_ids=batch["input_ids"].to(device), attention_mask=mask,
                                token_type_ids=torch.zeros_like(batch["input_ids"]).to(device))
        out[idx] = pool(states, mask, pooling).float().cpu()
    return out


@torch.no_grad()
def generate_similar(model, tokenizer, text: str, n: int = 8, k: int = 3, max_new_tokens: int = 32,
                     top_p: float = 0.95, seed: int = 0) -> list[str]:
    """SimBERT's gen_synonyms: sample n continuations under the UniLM mask, keep the k most similar.

    ``model`` is a RoFormerForCausalLM. Each step re-runs the full sequence with the
    UniLM mask (source bidirectional, target causal), so no cache semantics are needed.
    """
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    src = tokenizer(text, add_special_tokens=False)["input_ids"][:64]
    seqs = torch.tensor([[cls, *src, sep]] * n)
    types = torch.zeros_like(seqs)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_new_tokens):
        attn = torch.ones_like(seqs)
        mask = additive_mask(unilm_mask(types, attn), next(model.parameters()).dtype)
        logits = model(input_ids=seqs.to(device), token_type_ids=types.to(device),
                       attention_mask=mask.to(device)).logits[:, -1].float().cpu()
        probs = torch.softmax(logits, -1)
        sorted_p, sorted_i = probs.sort(-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=gen)
        nxt = sorted_i.gather(-1, choice).squeeze(-1)
        nxt[done] = sep
        seqs = torch.cat([seqs, nxt[:, None]], 1)
        types = torch.cat([types, torch.ones(n, 1, dtype=torch.long)], 1)
        done |= nxt == sep
        if done.all():
            break
    outs = []
    for row in seqs[:, len(src) + 2:].tolist():
        row = row[:row.index(sep)] if sep in row else row
        s = tokenizer.decode(row, skip_special_tokens=True)
        if s and s != text and s not in outs:
            outs.append(s)
    if not outs:
        return []
    vecs = F.normalize(encode(model, tokenizer, [text, *outs]), dim=-1)
    order = (vecs[1:] @ vecs[0]).argsort(descending=True).tolist()
    return [outs[i] for i in order[:k]]
