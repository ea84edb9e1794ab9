"""Summarization check for an exported T5-PEGASUS: does pretraining help title generation?

  python -m pretrain.evaluate --model runs/t5-pegasus/export --task summarization \
      [--data DIR] [-o steps=200 -o eval_examples=200 -o eval_data=PATH ...]

The exported model and the same architecture freshly initialized are each
fine-tuned for the same steps on the same batches of the CSL title-generation
training set (abstract -> title), then scored by character ROUGE of greedy
generations on the dev set. The gap between the two is what pretraining bought.

``--data`` is a folder holding ``*train*.tsv`` and ``*dev*.tsv`` (default:
``$ZH_SHARED_DATA/summarization/csl_title_3500``, rows ``title<TAB>abstract``).
``-o eval_data=FILE`` scores another file instead of the dev set, e.g.
``csl_benchmark_ts/dev.tsv`` (rows ``prefix<TAB>abstract<TAB>title``). Training
only ever reads the train file.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM

from tokenizer.loading import load_any_tokenizer

from pretrain.metrics import corpus_rouge

log = logging.getLogger("pretrain.evaluate")
DEFAULT_DATA = Path(os.environ.get("ZH_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) \
    / "summarization" / "csl_title_3500"


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(abstract, title) pairs from a TSV: ``title\\tabstract`` or ``prefix\\tabstract\\ttitle`` rows."""
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            cols = line.rstrip("\n").split("\t")
            if cols == [""]:
                continue
            if len(cols) == 2:
                title, abstract = cols
            elif len(cols) == 3:
                _, abstract, title = cols
            else:
                raise ValueError(f"{path}:{lineno}: expected 2 or 3 tab-separated columns, got {len(cols)}")
            pairs.append((abstract.strip(), title.strip()))
    if not pairs:
        raise ValueError(f"{path}: no examples")
    return pairs


def find_split(folder: Path, split: str) -> Path:
    hits = sorted(folder.glob(f"*{split}*.tsv"))
    if len(hits) != 1:
        raise FileNotFoundError(f"{folder}: expected one *{split}*.tsv file, found {len(hits)}")
    return hits[0]


class Encoder:
    """T5-PEGASUS conventions: the source as is, the target as [CLS] y [SEP] with [CLS] dropped from the labels."""

    def __init__(self, tokenizer, max_source_len: int, max_target_len: int):
        self.tok, self.src_len, self.tgt_len = tokenizer, max_source_len, max_target_len

    def sources(self, texts: list[str]) -> dict:
        return self.tok(texts, max_length=self.src_len, truncation=True, padding=True, return_tensors="pt")

    def batch(self, pairs: list[tuple[str, str]]) -> dict:
        src = self.sources([a for a, _ in pairs])
        tgt = self.tok([t for _, t in pairs], max_length=self.tgt_len + 1, truncation=True, padding=True,
                       return_tensors="pt")
        labels = tgt["input_ids"][:, 1:].clone()
        labels[tgt["attention_mask"][:, 1:] == 0] = -100
        return {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"], "labels": labels}


def scratch_copy(pretrained):
    """The same architecture, randomly initialized (with an untied LM head if the pretrained one is untied)."""
    from pretrain.models import untie_lm_head

    model = AutoModelForSeq2SeqLM.from_config(pretrained.config)
    head, emb = pretrained.get_output_embeddings(), pretrained.get_input_embeddings()
    if head is not None and head.weight is not emb.weight and hasattr(model, "shared"):
        untie_lm_head(model, getattr(pretrained.config, "initializer_factor", 1.0))
    model.generation_config = pretrained.generation_config
    return model


def fine_tune(model, encoder: Encoder, train: list, order: list[list[int]], lr: float) -> float:
    """Plain AdamW at a constant rate over the given batches; returns the mean loss of the last 10%."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for i, idx in enumerate(order, 1):
        loss = model(**encoder.batch([train[j] for j in idx])).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if i % 50 == 0:
            log.info("step %d/%d loss %.3f", i, len(order), sum(losses[-50:]) / len(losses[-50:]))
    tail = losses[-max(1, len(losses) // 10):]
    return sum(tail) / len(tail)


@torch.no_grad()
def generate(model, encoder: Encoder, sources: list[str], batch_size: int) -> list[str]:
    model.eval()
    out = []
    for i in range(0, len(sources), batch_size):
        enc = encoder.sources(sources[i:i + batch_size])
        ids = model.generate(**enc, max_new_tokens=encoder.tgt_len, num_beams=1, do_sample=False)
        out += encoder.tok.batch_decode(ids, skip_special_tokens=True)
    return out


def run(model_dir: str, data: str | None = None, *, steps: int = 200, batch_size: int = 8, lr: float = 1e-3,
        max_source_len: int = 256, max_target_len: int = 48, eval_examples: int = 200,
        eval_batch_size: int = 32, eval_data: str | None = None, seed: int = 0) -> dict:
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not an exported Hugging Face model folder (no config.json)")
    folder = Path(data) if data else DEFAULT_DATA
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: data folder not found (give --data or set ZH_SHARED_DATA)")
    train_file = find_split(folder, "train")
    eval_file = Path(eval_data) if eval_data else find_split(folder, "dev")
    if eval_file.resolve() == train_file.resolve():
        raise ValueError(f"{eval_file}: the evaluation file is the training file")
    train, evaluation = read_pairs(train_file), read_pairs(eval_file)[:eval_examples]
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")

    tokenizer = load_any_tokenizer(model_dir)
    encoder = Encoder(tokenizer, max_source_len, max_target_len)
    rng = torch.Generator().manual_seed(seed)
    order = [torch.randint(len(train), (batch_size,), generator=rng).tolist() for _ in range(steps)]
    sources, refs = [a for a, _ in evaluation], [t for _, t in evaluation]

    result = {"task": "summarization", "model": str(model_dir), "train_file": str(train_file),
              "eval_file": str(eval_file), "steps": steps, "batch_size": batch_size, "lr": lr,
              "examples": len(evaluation)}
    pretrained = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    torch.manual_seed(seed)
    scratch = scratch_copy(pretrained)
    for name, model in (("pretrained", pretrained), ("scratch", scratch)):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        final_loss = fine_tune(model, encoder, train, order, lr)
        scores = corpus_rouge(generate(model, encoder, sources, eval_batch_size), refs)
        result[name] = {**scores, "final_train_loss": final_loss}
        log.info("%s: %s (%.1f s)", name, scores, time.perf_counter() - t0)
    return result
