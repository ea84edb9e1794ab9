"""T5-PEGASUS: mT5 / T5 v1.1 trained to generate a pseudo summary from the rest of a document.

Recipe (Su Jianlin, "T5 PEGASUS: 开源一个中文生成式预训练模型", 2021): the pipeline
(``pipeline.pairs``) picks about a quarter of a document's sentences that best cover the
rest (LCS); the model reads the rest and is taught, by teacher forcing with
cross-entropy, to write those sentences. Token conventions follow the released
T5 PEGASUS: ``[CLS]`` starts the decoder, ``[SEP]`` ends a sequence, ``[PAD]`` (id 0) pads.
"""
from __future__ import annotations

import torch

from pretrain.models import T5Arch
from pretrain.objectives._t5 import T5Objective, seq2seq_batch, seq2seq_token_batch
from pretrain.objectives.base import ObjectiveSpec


class T5PegasusObjective(T5Objective):
    spec = ObjectiveSpec(
        name="t5-pegasus", arch=T5Arch, data="pairs", tokens="pairs", eval_tasks=("summarization",),
        finetune_suite=("thucnews_titles", "lcqmc"), required_tokens=("pad",),
        intended_use="Chinese text generation: fine-tune for summarization, title generation, question "
                     "generation or other sequence-to-sequence tasks (the pretraining task is writing the "
                     "pseudo summary of a document, so zero-shot outputs are summary-like but unpolished).")

    def collate(self, records: list[dict]) -> dict[str, torch.Tensor]:
        t = self.cfg.train
        return seq2seq_batch(self.tokenizer, [r["source"] for r in records], [r["target"] for r in records],
                             t.max_source_len, t.max_target_len, t.packing)

    def collate_tokens(self, samples: list[dict], seed: int) -> dict[str, torch.Tensor]:
        t = self.cfg.train
        return seq2seq_token_batch(self.tokenizer, [s["source_ids"].tolist() for s in samples],
                                   [s["target_ids"].tolist() for s in samples], t.max_source_len, t.max_target_len,
                                   t.packing)
