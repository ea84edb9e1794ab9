"""What every T5 objective shares: the mT5 model, its FLOPs, generation ROUGE and the export.

Not an objective itself (no spec): ``t5_pegasus`` and ``t5_span`` subclass it.
"""
from __future__ import annotations

import contextlib

import torch

from pretrain import lm_loss
from pretrain.metrics import corpus_rouge
from pretrain.models import bias_offsets_only, build_t5, t5_generation_config, t5_special_ids, t5_train_flops
from pretrain.objectives.base import Objective, pad_batch
from pretrain.dropout import flattens_packed
from pretrain.packing import first_fit, flatten_rows, model_mask, pack, with_rows


def seq2seq_batch(tokenizer, sources: list[str], targets: list[str], max_source_len: int,
                  max_target_len: int, packing: bool = False) -> dict[str, torch.Tensor]:
    """Encoder inputs (the tokenizer's own template) and decoder labels ``y[:max_target_len - 1] eos``;
    the model inserts the decoder start token ([CLS], or T5's pad) when it shifts labels right."""
    src = tokenizer(sources, max_length=max_source_len, truncation=True)["input_ids"]
    eos = t5_special_ids(tokenizer)["eos"]
    rows = [ids[:max_target_len - 1] + [eos] for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]]
    return pair_batch(tokenizer, src, rows, max_source_len, max_target_len, packing)


def pair_batch(tokenizer, sources: list[list[int]], targets: list[list[int]], max_source_len: int,
               max_target_len: int, packing: bool = False) -> dict[str, torch.Tensor]:
    """(source, target) token lists as a batch: one pair per padded row, or packed.

    Packed (``pretrain.packing``): pairs share rows while their sources fit in max_source_len and
    their targets in max_target_len; ``segment_ids`` / ``decoder_segment_ids`` say which pair a
    token belongs to, and each target is shifted right inside its own segment (the decoder
    start token begins every segment), so ``T5Objective.loss`` computes exactly the unpacked loss.
    """
    pad = tokenizer.pad_token_id
    if not packing:
        enc = pad_batch(sources, pad)
        labels = pad_batch(targets, pad)
        enc["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
        return enc
    start = t5_special_ids(tokenizer)["start"]
    caps = (max([max_source_len, *map(len, sources)]), max([max_target_len, *map(len, targets)]))
    rows = first_fit([(len(s), len(t)) for s, t in zip(sources, targets)], caps, decreasing=True)
    enc = pack([[sources[i] for i in r] for r in rows], pad, rows)
    dec = pack([[[start, *targets[i][:-1]] for i in r] for r in rows], pad, rows)
    labels = pack([[targets[i] for i in r] for r in rows], pad, rows)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "segment_ids": enc["segment_ids"],
            "decoder_input_ids": dec["input_ids"], "decoder_segment_ids": dec["segment_ids"],
            "labels": labels["input_ids"].masked_fill(labels["segment_ids"] < 0, -100)}


CROSS_MASK = "packed_cross_attention_mask"


def _route_cross_mask(module, args, kwargs):
    """Decoder pre-hook: a packed batch's cross-attention mask replaces the encoder mask, which
    (MT5ForConditionalGeneration passes the encoder's own mask to the decoder) has the wrong shape."""
    mask = kwargs.pop(CROSS_MASK, None)
    if mask is not None:
        kwargs["encoder_attention_mask"] = mask
    return args, kwargs


def _drop_cross_mask(module, args, kwargs):
    kwargs.pop(CROSS_MASK, None)
    return args, kwargs


def packed_forward(model, batch: dict, with_labels: bool = True, rows: dict | None = None):
    """The Hugging Face T5 forward (through ``model``, e.g. the DeepSpeed engine) on a packed batch:
    block-diagonal encoder, causal block-diagonal decoder, cross-attention to the pair's own source.
    ``with_labels``: the model gets the batch's labels and computes its loss; False: outputs only.
    ``rows``: ``batch`` is these packed rows flattened (``packing.flatten_rows``); the masks are the
    rows', carrying where each row cell sits in the flat tokens (``packing.with_rows``)."""
    module = getattr(model, "module", model)
    if not getattr(module, "_packing_hooks", False):
        module.encoder.register_forward_pre_hook(_drop_cross_mask, with_kwargs=True)
        module.decoder.register_forward_pre_hook(_route_cross_mask, with_kwargs=True)
        module._packing_hooks = True
    layout = batch if rows is None else rows
    enc, dec = layout["segment_ids"], layout["decoder_segment_ids"]
    masks = model_mask(module, enc), model_mask(module, dec, causal=True), model_mask(module, dec, enc)
    if rows is not None:
        for mask, q, k in zip(masks, (enc, dec, dec), (None, None, enc)):
            with_rows(mask, q >= 0, None if k is None else k >= 0)
    ids = {"input_ids": batch["input_ids"], "decoder_input_ids": batch["decoder_input_ids"]}
    if rows is not None and module.encoder.embed_tokens.weight is module.decoder.embed_tokens.weight:
        ids = shared_lookup(module.encoder.embed_tokens, **ids)
    # flat: the attention reads the relative bias's offsets only (its rows' corner), so none is built N x N
    with bias_offsets_only() if rows is not None else contextlib.nullcontext():
        return model(**ids, attention_mask=masks[0], decoder_attention_mask=masks[1],
                     labels=batch["labels"] if with_labels else None,
                     use_cache=False, **{CROSS_MASK: masks[2]})


def shared_lookup(embed, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor) -> dict:
    """Both stacks' embeddings from one lookup in their shared table, so its gradient is one dense
    vocabulary x d_model tensor built once, not two built and added (at 50k x 256 in fp32, a
    51 MB fill and a 51 MB add less each step)."""
    both = embed(torch.cat([input_ids.reshape(-1), decoder_input_ids.reshape(-1)]))
    n = input_ids.numel()
    return {"inputs_embeds": both[:n].view(*input_ids.shape, -1),
            "decoder_inputs_embeds": both[n:].view(*decoder_input_ids.shape, -1)}


# the keys that T5Objective.loss flattens with each segment key, and what pads them
FLAT = {"segment_ids": ("input_ids", "attention_mask"), "decoder_segment_ids": ("decoder_input_ids", "labels")}
FLAT_FILL = {"labels": -100}


def template(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's template puts before and after a sequence ([CLS] x [SEP], or mT5's x </s>)."""
    inner = tokenizer("一", add_special_tokens=False)["input_ids"]
    full = tokenizer("一")["input_ids"]
    at = next(i for i in range(len(full)) if full[i:i + len(inner)] == inner)
    return full[:at], full[at + len(inner):]


def seq2seq_token_batch(tokenizer, sources: list[list[int]], targets: list[list[int]], max_source_len: int,
                        max_target_len: int, packing: bool = False) -> dict[str, torch.Tensor]:
    """``seq2seq_batch`` from token ids: the same truncation, special tokens, padding (or packing) and labels."""
    pre, post = template(tokenizer)
    keep = max_source_len - len(pre) - len(post)
    eos = t5_special_ids(tokenizer)["eos"]
    return pair_batch(tokenizer, [[*pre, *s[:keep], *post] for s in sources],
                      [[*t[:max_target_len - 1], eos] for t in targets], max_source_len, max_target_len, packing)


class T5Objective(Objective):
    """What every T5 objective shares: the mT5 model, FLOPs, generation ROUGE and the export."""

    def init_state(self, state: dict, config) -> dict:
        """T5 / mT5 checkpoints have this module's parameter names; a tied head (no ``lm_head`` in the
        file) becomes the untied one it computes: the embedding, scaled by d_model**-0.5 where the
        model rescales its decoder output (T5 v1.0)."""
        if "lm_head.weight" not in state and "shared.weight" in state:
            scale = config.d_model ** -0.5 if getattr(config, "scale_decoder_outputs", False) else 1.0
            state = {**state, "lm_head.weight": state["shared.weight"] * scale}
        return state

    def build_model(self):
        return build_t5(self.cfg.arch, self.tokenizer)

    @staticmethod
    def tokens_in(batch: dict) -> int:
        return int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())

    def train_flops(self, model, batch: dict) -> float:
        return t5_train_flops(model, batch, self.__dict__.setdefault("_flops_cache", {}))

    def loss(self, model, batch: dict):
        """Cross-entropy over the target tokens. Not compiled, the LM head runs fused with it on the
        labelled positions only (``pretrain.lm_loss``, ``train.fused_lm_loss``); the same loss."""
        module = getattr(model, "module", model)
        rows = None
        if "segment_ids" in batch and flattens_packed(module):
            # linear layers on the tokens alone, attention on the rows (train.flatten_packed)
            rows, batch = batch, flatten_rows(batch, FLAT, FLAT_FILL)
        head = None
        if self.cfg.train.fused_lm_loss and not self.cfg.train.compile:
            head = lm_loss.install(module.lm_head)
        if head is None:
            if "segment_ids" in batch:
                return packed_forward(model, batch, rows=rows).loss, {}
            return model(**batch).loss, {}
        with head.loss_on(batch["labels"]):
            if "segment_ids" in batch:
                return packed_forward(model, batch, with_labels=False, rows=rows).logits, {}
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            inputs.setdefault("decoder_input_ids", module._shift_right(batch["labels"]))
            return model(**inputs).logits, {}

    @torch.no_grad()
    def evaluate(self, model, records: list[dict]) -> dict[str, float]:
        """Character ROUGE-1/2/L of greedy generations against the held-out targets."""
        records = [r for r in records if "source" in r and "target" in r]
        if not records:
            return {}
        batch = self.tokenizer([r["source"] for r in records], max_length=self.cfg.train.max_source_len,
                               truncation=True, padding=True, return_tensors="pt")
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out = model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                             max_new_tokens=self.cfg.train.max_target_len, num_beams=1, do_sample=False)
        model.train(was_training)
        preds = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return corpus_rouge(preds, [r["target"] for r in records])

    def hf_parts(self, model) -> dict:
        model.generation_config = t5_generation_config(self.tokenizer, self.cfg.train.max_target_len)
        return {"": model}
