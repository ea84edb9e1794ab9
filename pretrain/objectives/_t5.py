"""What every T5 objective shares: the mT5 model, its FLOPs, generation ROUGE and the export.

Not an objective itself (no spec): ``t5_pegasus`` and ``t5_span`` subclass it.
"""
from __future__ import annotations

import torch

from pretrain.metrics import corpus_rouge
from pretrain.models import build_t5, t5_generation_config, t5_train_flops
from pretrain.objectives.base import Objective, pad_batch


def seq2seq_batch(tokenizer, sources: list[str], targets: list[str], max_source_len: int,
                  max_target_len: int) -> dict[str, torch.Tensor]:
    """Encoder inputs and decoder labels. Targets are encoded as [CLS] y [SEP]; the labels drop
    [CLS], which the model re-inserts as the decoder start token when it shifts labels right."""
    src = tokenizer(sources, max_length=max_source_len, truncation=True, padding=True, return_tensors="pt")
    tgt = tokenizer(targets, max_length=max_target_len + 1, truncation=True, padding=True, return_tensors="pt")
    labels = tgt["input_ids"][:, 1:].clone()
    labels[tgt["attention_mask"][:, 1:] == 0] = -100
    return {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"], "labels": labels}


def seq2seq_token_batch(tokenizer, sources: list[list[int]], targets: list[list[int]], max_source_len: int,
                        max_target_len: int) -> dict[str, torch.Tensor]:
    """``seq2seq_batch`` from token ids: the same truncation, special tokens, padding and labels."""
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    enc = pad_batch([[cls, *s[:max_source_len - 2], sep] for s in sources], pad)
    tgt = pad_batch([[*t[:max_target_len - 1], sep] for t in targets], pad)
    enc["labels"] = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
    return enc


class T5Objective(Objective):
    """What every T5 objective shares: the mT5 model, FLOPs, generation ROUGE and the export."""

    def build_model(self):
        return build_t5(self.cfg.arch, self.tokenizer)

    @staticmethod
    def tokens_in(batch: dict) -> int:
        return int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())

    def train_flops(self, model, batch: dict) -> float:
        return t5_train_flops(model, batch, self.__dict__.setdefault("_flops_cache", {}))

    def loss(self, model, batch: dict):
        return model(**batch).loss, {}

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
