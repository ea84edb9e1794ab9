"""T5-PEGASUS: mT5 / T5 v1.1 trained to generate a pseudo summary from the rest of a document.

Recipe (seed 004): the pipeline (``pipeline.pairs``) picks about a quarter of a
document's sentences that best cover the rest (LCS); the model reads the rest
and is taught, by teacher forcing with cross-entropy, to write those sentences.
Token conventions follow the released T5 PEGASUS: ``[CLS]`` starts the decoder,
``[SEP]`` ends a sequence, ``[PAD]`` (id 0) pads.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import GenerationConfig, MT5Config, MT5ForConditionalGeneration
from pretrain.objectives import load_tokenizer

from pretrain.metrics import corpus_rouge


def untie_lm_head(model, factor: float = 1.0) -> None:
    """Give the model its own LM head, as mT5 / T5 v1.1 have.

    transformers 5 always ties ``lm_head`` to the input embedding when it builds
    an (M)T5 model; a checkpoint holding a different ``lm_head`` loads untied.
    The head is initialized like Mesh TensorFlow's untied logits layer,
    N(0, factor / sqrt(d_model)), so the first loss is about ln(vocab size).
    """
    weight = torch.empty_like(model.shared.weight).normal_(0.0, factor * model.config.d_model ** -0.5)
    model.lm_head.weight = torch.nn.Parameter(weight)
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        tied.pop("lm_head.weight", None)


class T5PegasusObjective:
    name = "t5-pegasus"
    hf_auto_class = "AutoModelForSeq2SeqLM"

    def __init__(self, cfg, tokenizer=None):
        self.cfg = cfg
        self.tokenizer = tok = load_tokenizer(cfg, tokenizer, required=("pad", "cls", "sep"))
        self.train_dir = cfg.data.pairs_dir
        self.valid_dir = cfg.data.pairs_dir

    # -- model -------------------------------------------------------------
    def model_config(self) -> MT5Config:
        a, tok = self.cfg.arch, self.tokenizer
        return MT5Config(
            vocab_size=len(tok), d_model=a.d_model, d_kv=a.d_kv, d_ff=a.d_ff,
            num_layers=a.num_layers, num_decoder_layers=a.num_decoder_layers, num_heads=a.num_heads,
            relative_attention_num_buckets=a.relative_attention_num_buckets,
            relative_attention_max_distance=a.relative_attention_max_distance,
            dropout_rate=a.dropout_rate, feed_forward_proj=a.feed_forward_proj,
            initializer_factor=a.initializer_factor,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id,
            decoder_start_token_id=tok.cls_token_id,
        )

    def build_model(self) -> MT5ForConditionalGeneration:
        model = MT5ForConditionalGeneration(self.model_config())
        untie_lm_head(model, self.cfg.arch.initializer_factor)
        return model

    # -- data --------------------------------------------------------------
    def collate(self, records: list[dict]) -> dict[str, torch.Tensor]:
        t = self.cfg.train
        src = self.tokenizer([r["source"] for r in records], max_length=t.max_source_len,
                             truncation=True, padding=True, return_tensors="pt")
        # Targets are encoded as [CLS] y [SEP]; the labels drop [CLS], which the
        # model re-inserts as the decoder start token when it shifts labels right.
        tgt = self.tokenizer([r["target"] for r in records], max_length=t.max_target_len + 1,
                             truncation=True, padding=True, return_tensors="pt")
        labels = tgt["input_ids"][:, 1:].clone()
        labels[tgt["attention_mask"][:, 1:] == 0] = -100
        return {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"], "labels": labels}

    @staticmethod
    def tokens_in(batch: dict) -> int:
        return int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())

    def train_flops(self, model, batch: dict) -> float:
        """6 x (encoder matmul parameters x source tokens + decoder and LM-head parameters x target tokens).

        Embedding lookups are not matmuls; the encoder never sees target tokens nor the
        decoder source tokens, so 6 x all parameters x all tokens would double count.
        """
        if getattr(self, "_param_split", (None,))[0] is not model:   # recount after growth
            size = lambda p: getattr(p, "ds_numel", p.numel())          # ZeRO-3 partitions parameters
            enc = sum(size(p) for n, p in model.named_parameters() if n.startswith("encoder.block"))
            dec = sum(size(p) for n, p in model.named_parameters()
                      if n.startswith("decoder.block") or n.startswith("lm_head"))
            self._param_split = (model, enc, dec)
        _, enc, dec = self._param_split
        src = int(batch["attention_mask"].sum())
        tgt = int((batch["labels"] != -100).sum())
        return 6.0 * (enc * src + dec * tgt)

    def loss(self, model, batch: dict):
        out = model(**batch)
        return out.loss, {}

    # -- validation --------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, records: list[dict]) -> dict[str, float]:
        """Character ROUGE-1/2/L of greedy generations against held-out pseudo summaries."""
        if not records:
            return {}
        batch = self.tokenizer([r["source"] for r in records], max_length=self.cfg.train.max_source_len,
                               truncation=True, padding=True, return_tensors="pt")
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out = model.generate(input_ids=batch["input_ids"].to(device),
                             attention_mask=batch["attention_mask"].to(device),
                             max_new_tokens=self.cfg.train.max_target_len, num_beams=1, do_sample=False)
        model.train(was_training)
        preds = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return corpus_rouge(preds, [r["target"] for r in records])

    # -- export ------------------------------------------------------------
    def generation_config(self) -> GenerationConfig:
        tok = self.tokenizer
        return GenerationConfig(decoder_start_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                pad_token_id=tok.pad_token_id, max_new_tokens=self.cfg.train.max_target_len)

    def export(self, state_dict: dict, out_dir: str | Path) -> None:
        """Write a Hugging Face folder (safetensors) that AutoModelForSeq2SeqLM loads."""
        model = self.build_model()
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        # Tied encoder/decoder input embeddings appear once in a state dict.
        missing = [k for k in missing if not k.endswith(("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"))]
        if missing or unexpected:
            raise RuntimeError(f"export: state dict mismatch (missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.generation_config = self.generation_config()
        model.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)
