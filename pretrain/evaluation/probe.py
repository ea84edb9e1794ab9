"""A cheap downstream probe for use during pretraining: a linear classifier on frozen features.

``probe(model, tokenizer, task)`` encodes a capped slice of the task's *train* role and its
*dev* role (never test) with the Hugging Face module being trained, mean-pools the last
hidden layer over real tokens, fits a multinomial logistic regression (L-BFGS, L2) on the
train features and returns dev accuracy and macro-F1. A few seconds on CPU for a tiny model;
no DeepSpeed: pass the HF module (ELECTRA: the discriminator, MLM: the masked LM, RoFormer-Sim:
its RoFormer, T5: the seq2seq model, whose encoder is used). Single-sentence and pair tasks.
"""
from __future__ import annotations

import time

import torch

from pretrain.evaluation import scoring
from pretrain.evaluation.finetune import capped
from pretrain.evaluation.tasks import get_task, load_splits

_ROWS: dict[tuple, tuple[list[dict], list[dict]]] = {}


def probe_rows(task: str, n_train: int, n_dev: int, data: str | None = None) -> tuple[list[dict], list[dict]]:
    """Capped train and dev rows, read once per process (the trainer calls the probe repeatedly)."""
    key = (task, n_train, n_dev, data)
    if key not in _ROWS:
        spec = get_task(task)
        if spec.kind not in ("single", "pair"):
            raise ValueError(f"probe: task '{task}' is {spec.kind}; use a single-sentence or pair task")
        rows, _ = load_splits(spec, data)
        _ROWS[key] = (capped(rows["train"], spec, n_train), capped(rows["dev"], spec, n_dev))
    return _ROWS[key]


@torch.no_grad()
def features(model, tokenizer, rows: list[dict], max_len: int, batch_size: int) -> torch.Tensor:
    """Mean of the last hidden layer over non-padding tokens, one float32 vector per row."""
    device = next(model.parameters()).device
    encoder = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
    out = []
    for i in range(0, len(rows), batch_size):
        part = rows[i:i + batch_size]
        args = ([r["text"] for r in part],) if "text" in part[0] else ([r["text_a"] for r in part], [r["text_b"] for r in part])
        enc = tokenizer(*args, truncation=True, max_length=max_len, padding=True, return_tensors="pt").to(device)
        hidden = encoder(**enc, output_hidden_states=True).hidden_states[-1].float()
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu())
    return torch.cat(out)


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_labels: int, l2: float = 1e-3, steps: int = 100) -> torch.nn.Linear:
    """Multinomial logistic regression on standardized features (deterministic L-BFGS from zeros)."""
    head = torch.nn.Linear(x.shape[1], num_labels)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head


def probe(model, tokenizer, task: str = "thucnews_titles", n_train: int = 1000, n_dev: int = 500,
          max_len: int = 0, batch_size: int = 64, data: str | None = None) -> dict:
    """Dev accuracy / macro-F1 (percent) of a linear probe; keys are prefixed ``probe_`` for metrics.jsonl."""
    t0 = time.perf_counter()
    spec = get_task(task)
    train, dev = probe_rows(task, n_train, n_dev, data)
    was_training = model.training
    model.eval()
    try:
        max_len = max_len or spec.max_len
        x_train, x_dev = (features(model, tokenizer, rows, max_len, batch_size) for rows in (train, dev))
    finally:
        model.train(was_training)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    y_train = torch.tensor([r["label"] for r in train])
    head = fit_linear((x_train - mean) / std, y_train, spec.num_labels)
    with torch.no_grad():
        pred = head((x_dev - mean) / std).argmax(-1).numpy()
    gold = [r["label"] for r in dev]
    return {"probe_accuracy": 100 * scoring.accuracy(pred, gold),
            "probe_macro_f1": 100 * scoring.macro_f1(pred, gold), "probe_n_train": len(train),
            "probe_n_dev": len(dev), "probe_seconds": round(time.perf_counter() - t0, 2)}
