"""Held-out masked-LM loss and accuracy of an exported masked LM, under uniform 15% masking.

  python -m pretrain.evaluate --task mlm --model RUN/export --data PATH [-o max_rows=256] [-o seq_len=128]
      [-o mask_prob=0.15] [-o replace=mask|bert] [-o seed=0] [-o batch_size=16]

PATH: a pipeline output folder (its valid split, else train), JSON lines
(``text``, ``content`` or ``sentence``; .gz allowed), or a text/TSV file (the
last tab-separated column; cnews ``label\\tarticle`` works as is). Documents are
packed into ``[CLS] doc [SEP] doc [SEP] ...`` rows like the training data; a
fixed seed draws uniform k-subsets of tokens (k = round(mask_prob * n)), all
replaced by [MASK] (``replace=bert``: 80/10/10). Loss is the mean cross-entropy
over masked tokens, accuracy the share of them predicted exactly.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from pretrain.objectives.mlm_proposal import MLMProposalConfig, corrupt, draw_units, pack_rows, unit_budget
from pretrain.packing import encoder_kwargs


def read_texts(path: str | Path) -> list[str]:
    path = Path(path)
    if path.is_dir():
        from pretrain.data import list_shards, read_shard
        shards = list_shards(path, "valid") or list_shards(path, "train")
        return [r["text"] for s in shards for r in read_shard(s)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        lines = [line.rstrip("\n") for line in fh if line.strip()]
    if ".jsonl" in path.name or ".json" in path.name:
        texts = []
        for line in lines:
            rec = json.loads(line)
            text = next((rec[k] for k in ("text", "content", "sentence") if isinstance(rec.get(k), str)), None)
            if text:
                texts.append(text)
        return texts
    return [line.split("\t")[-1] for line in lines]


@torch.no_grad()
def run(model_dir: str, data: str | None, max_rows: int = 256, seq_len: int = 128, mask_prob: float = 0.15,
        replace: str = "mask", seed: int = 0, batch_size: int = 16) -> dict:
    from transformers import AutoModelForMaskedLM

    from tokenizer.loading import load_any_tokenizer

    if not data:
        raise ValueError("--data is required for --task mlm (held-out text: a folder, .jsonl or .txt/.tsv)")
    if replace not in ("mask", "bert"):
        raise ValueError(f"option replace must be mask or bert, got {replace!r}")
    tok = load_any_tokenizer(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    seq_len = min(seq_len, getattr(model.config, "max_position_embeddings", seq_len))
    texts = read_texts(data)
    if not texts:
        raise ValueError(f"{data}: no text found")
    # Tokenize only as many documents as the row budget needs.
    docs, budget = [], max_rows * (seq_len - 1)
    for text in texts:
        docs.append(tok(text, add_special_tokens=False)["input_ids"])
        budget -= len(docs[-1]) + 1
        if budget <= 0:
            break
    rows = pack_rows(docs, seq_len, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, max_rows)
    ids, units = rows["input_ids"], rows["unit_ids"]
    oc = MLMProposalConfig(mask_prob=mask_prob, replace_mask=1.0 if replace == "mask" else 0.8,
                           replace_random=0.0 if replace == "mask" else 0.1)
    gen = torch.Generator().manual_seed(seed)
    random_low = max(tok.all_special_ids) + 1
    total_ce, correct, count = 0.0, 0, 0
    for start in range(0, ids.shape[0], batch_size):
        part = slice(start, start + batch_size)
        b_ids, b_units = ids[part], units[part]
        n_units, k = unit_budget(b_units, mask_prob)
        draws, valid, _ = draw_units(None, n_units, k, max(int(n_units.max()), 1), gen)
        corrupted, selected = corrupt(b_ids, b_units, draws, valid, oc, tok.mask_token_id, random_low,
                                      model.config.vocab_size, gen)
        kw = encoder_kwargs(model, rows["attention_mask"][part], rows["segment_ids"][part], rows["position_ids"][part])
        logits = model(input_ids=corrupted, **kw).logits[selected].float()
        labels = b_ids[selected]
        total_ce += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(-1) == labels).sum())
        count += int(labels.numel())
    return {"task": "mlm", "model": str(model_dir), "loss": total_ce / max(count, 1),
            "accuracy": correct / max(count, 1), "masked_tokens": count, "rows": int(ids.shape[0]),
            "seq_len": seq_len, "mask_prob": mask_prob}
