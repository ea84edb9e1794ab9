"""Fine-tune an exported encoder on a labeled Chinese task and score it on the task's test role.

  python -m pretrain.evaluate --model RUN/export --task thucnews_titles|iflytek|chnsenticorp|waimai|weibo|
      lcqmc|bq|cmrc2018|c3 [--data SHARED_DATA_DIR] [-o init=pretrained|scratch] [-o seed=0] [-o steps=300]
      [-o lr=1e-3] [-o batch_size=32] [-o max_len=N] [-o max_train=2000] [-o max_dev=500] [-o max_test=1000]

Roles and files per task: ``pretrain/evaluation/tasks.py``. The model is the export loaded
through a ``transformers`` head (``AutoModelForSequenceClassification`` for single sentences and
pairs, ``AutoModelForQuestionAnswering`` for CMRC 2018, ``AutoModelForMultipleChoice`` for C3)
and trained by the ``transformers`` Trainer for a fixed number of steps (AdamW, linear decay
after 10% warmup, weight decay 0.01, no early stopping), then scored once on dev and once on
test. ``init=scratch`` is the twin: the export's config (architecture, vocabulary) with random
weights, fine-tuned with the same recipe. Everything is seeded by ``seed`` (head init, scratch
init, data order, dropout); runs on GPU when one is visible, else CPU.

Caps (``max_train``, ``max_dev``, ``max_test``; 0 = all rows) take the first rows in a fixed
hash order, the same for every seed and model, so test rows are paired across runs.
Defaults are sized for a tiny model on 2 CPU cores (about a minute per run); for a real run
raise ``steps`` and the caps, e.g. ``-o steps=3000 -o max_train=0 -o max_test=0 -o lr=3e-4``.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pretrain.evaluation import scoring
from pretrain.evaluation.tasks import Task, get_task, group_key, load_splits

log = logging.getLogger("pretrain.evaluate")
# Choices of C3 come in 2-4; shorter lists are padded to 4 with this filler (never the answer).
NO_CHOICE = "无效答案"
DEFAULTS = {  # per task kind: what `make eval` runs for a tiny model in about a minute
    "single": {"steps": 300, "batch_size": 32, "lr": 1e-3},
    "pair": {"steps": 300, "batch_size": 32, "lr": 1e-3},
    "span": {"steps": 300, "batch_size": 16, "lr": 1e-3},
    "choice": {"steps": 200, "batch_size": 4, "lr": 1e-3},
}


def head_class(task: Task):
    from transformers import AutoModelForMultipleChoice, AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    return {"single": AutoModelForSequenceClassification, "pair": AutoModelForSequenceClassification,
            "span": AutoModelForQuestionAnswering, "choice": AutoModelForMultipleChoice}[task.kind]


def load_model(model_dir: str | Path, task: Task, init: str = "pretrained", seed: int = 0):
    """The export (or its random-init twin) under the task's head; the new head is seeded."""
    from transformers import AutoConfig, set_seed
    from transformers.utils import logging as hf_logging

    if init not in ("pretrained", "scratch"):
        raise ValueError(f"init must be pretrained or scratch, got '{init}'")
    config = AutoConfig.from_pretrained(model_dir)
    if task.num_labels:
        config.num_labels = task.num_labels
    config.is_decoder = False        # a RoFormer-Sim export is bidirectional under its encoder heads
    cls = head_class(task)
    set_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized head" notices are expected here
    try:
        if init == "pretrained":
            return cls.from_pretrained(model_dir, config=config)
        return cls.from_config(config)
    except ValueError as exc:
        raise ValueError(f"{model_dir}: {config.model_type} has no {task.kind} head in transformers ({exc})") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def capped(rows: list[dict], task: Task, n: int) -> list[dict]:
    """The first n rows in a hash order that depends only on the rows (0 = all, in that order)."""
    def order(r):
        return hashlib.sha1((group_key(task, r) + "\x00" + str(r.get("id", r.get("label", "")))).encode()).digest()
    ordered = sorted(rows, key=order)
    return ordered[:n] if n else ordered


def answer_start(row: dict, k: int) -> int:
    """Character offset of answer k in the passage: the recorded one when it matches, else the first match."""
    start, text = row["answer_starts"][k], row["answers"][k]
    return start if start >= 0 and row["context"][start:start + len(text)] == text else row["context"].find(text)


class Encoder:
    """Rows -> model features for one task kind (token_type_ids only where the model has them)."""

    def __init__(self, tokenizer, task: Task, max_len: int, type_ids: bool, doc_stride: int = 128):
        self.tok, self.task, self.max_len, self.type_ids, self.stride = tokenizer, task, max_len, type_ids, doc_stride

    def __call__(self, rows: list[dict], train: bool) -> tuple[list[dict], list[dict]]:
        """(features, meta): meta ties span features back to their example for decoding."""
        kind = self.task.kind
        if kind == "span":
            return self.spans(rows, train)
        if kind == "choice":
            return self.choices(rows), []
        args = ([r["text"] for r in rows],) if kind == "single" else ([r["text_a"] for r in rows], [r["text_b"] for r in rows])
        enc = self.tok(*args, truncation=True, max_length=self.max_len, return_token_type_ids=self.type_ids)
        return [{**{k: enc[k][i] for k in enc.keys()}, "labels": r["label"]} for i, r in enumerate(rows)], []

    def choices(self, rows: list[dict]) -> list[dict]:
        feats = []
        for r in rows:
            options = r["choices"] + [NO_CHOICE] * (4 - len(r["choices"]))
            enc = self.tok([r["context"]] * 4, [f"{r['question']} {c}" for c in options], truncation="only_first",
                           max_length=self.max_len, return_token_type_ids=self.type_ids)
            feats.append({**{k: enc[k] for k in enc.keys()}, "labels": r["label"]})
        return feats

    def spans(self, rows: list[dict], train: bool) -> tuple[list[dict], list[dict]]:
        """Question + passage windows (stride ``doc_stride``); train windows get the answer's token span
        (or [CLS] when the answer is outside the window), eval windows keep offsets for decoding."""
        enc = self.tok([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                       max_length=self.max_len, stride=self.stride, return_overflowing_tokens=True,
                       return_offsets_mapping=True, return_token_type_ids=self.type_ids)
        feats, meta = [], []
        for i, example in enumerate(enc["overflow_to_sample_mapping"]):
            seq = enc.sequence_ids(i)
            offsets = enc["offset_mapping"][i]
            feat = {k: enc[k][i] for k in enc.keys() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
            if train:
                row = rows[example]
                start_char = answer_start(row, 0)
                end_char = start_char + len(row["answers"][0])
                ctx = [j for j, s in enumerate(seq) if s == 1]
                start = end = 0
                if start_char >= 0 and ctx and offsets[ctx[0]][0] <= start_char and offsets[ctx[-1]][1] >= end_char:
                    start = next(j for j in ctx if offsets[j][1] > start_char)
                    end = next(j for j in reversed(ctx) if offsets[j][0] < end_char)
                feat.update(start_positions=start, end_positions=end)
            else:
                meta.append({"example": example, "offsets": [o if s == 1 else None for o, s in zip(offsets, seq)]})
            feats.append(feat)
        return feats, meta


def decode_spans(rows: list[dict], meta: list[dict], start_logits, end_logits, max_answer_tokens: int) -> list[str]:
    """Best (start <= end < start + max_answer_tokens) passage span per example over its windows."""
    best: dict[int, tuple[float, str]] = {}
    for m, s, e in zip(meta, start_logits, end_logits):
        ok = np.array([o is not None for o in m["offsets"]] + [False] * (len(s) - len(m["offsets"])))
        if not ok.any():
            continue
        s, e = np.where(ok, s, -np.inf), np.where(ok, e, -np.inf)
        scores = s[:, None] + e[None, :]
        n = len(s)
        band = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), k=max_answer_tokens)
        scores = np.where(band, scores, -np.inf)
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if not np.isfinite(scores[i, j]):
            continue
        context = rows[m["example"]]["context"]
        text = context[m["offsets"][i][0]:m["offsets"][j][1]]
        if m["example"] not in best or scores[i, j] > best[m["example"]][0]:
            best[m["example"]] = (float(scores[i, j]), text)
    return [best.get(k, (0.0, ""))[1] for k in range(len(rows))]


def span_ceiling(rows: list[dict], tokenizer) -> float:
    """Share of answers whose characters start and end on token boundaries of the passage:
    the EM a word-level vocabulary can reach at most (a span cannot split a token)."""
    hits = 0
    for r in rows:
        offsets = tokenizer(r["context"], add_special_tokens=False, return_offsets_mapping=True,
                            verbose=False)["offset_mapping"]
        starts, ends = {a for a, _ in offsets}, {b for _, b in offsets}
        hits += any(answer_start(r, k) in starts and answer_start(r, k) + len(text) in ends
                    for k, text in enumerate(r["answers"]))
    return hits / max(len(rows), 1)


def score(task: Task, rows: list[dict], output, meta: list[dict], max_answer_tokens: int) -> tuple[dict, np.ndarray]:
    """Aggregate metrics (percent) and the per-example primary score (0/1 correct, or CMRC F1)."""
    if task.kind == "span":
        start, end = output.predictions[:2] if isinstance(output.predictions, tuple) else output.predictions
        preds = decode_spans(rows, meta, start, end, max_answer_tokens)
        f1 = np.array([scoring.cmrc_f1(p, r["answers"]) for p, r in zip(preds, rows)])
        em = np.array([scoring.cmrc_em(p, r["answers"]) for p, r in zip(preds, rows)])
        return {"f1": 100 * float(f1.mean()), "em": 100 * float(em.mean())}, f1
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    pred, gold = logits.argmax(-1), np.array([r["label"] for r in rows])
    metrics = {"accuracy": 100 * scoring.accuracy(pred, gold)}
    if "macro_f1" in task.metrics:
        metrics["macro_f1"] = 100 * scoring.macro_f1(pred, gold)
    return metrics, (pred == gold).astype(np.float64)


def collator(tokenizer, task: Task):
    from transformers import DataCollatorForMultipleChoice, DataCollatorWithPadding
    cls = DataCollatorForMultipleChoice if task.kind == "choice" else DataCollatorWithPadding
    return cls(tokenizer)


def training_args(out_dir: str, seed: int, steps: int, batch_size: int, eval_batch_size: int, lr: float,
                  warmup: float, weight_decay: float, progress: bool):
    from transformers import TrainingArguments
    return TrainingArguments(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=eval_batch_size, learning_rate=lr, weight_decay=weight_decay,
        warmup_steps=int(round(warmup * steps)), lr_scheduler_type="linear", seed=seed, data_seed=seed,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none",
        disable_tqdm=not progress, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available())


def fine_tune(model, tokenizer, task: Task, train: list[dict], seed: int, steps: int, batch_size: int,
              eval_batch_size: int, lr: float, warmup: float = 0.1, weight_decay: float = 0.01, progress: bool = True):
    """The transformers Trainer on already-encoded features; returns (trainer, mean training loss)."""
    from transformers import Trainer

    out_dir = tempfile.mkdtemp(prefix="finetune-")
    args = training_args(out_dir, seed, steps, batch_size, eval_batch_size, lr, warmup, weight_decay, progress)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator(tokenizer, task),
                      processing_class=tokenizer)
    return trainer, trainer.train().training_loss


def run(model_dir: str, data: str | None = None, *, task: str, init: str = "pretrained", seed: int = 0,
        steps: int | None = None, lr: float | None = None, batch_size: int | None = None, max_len: int = 0,
        max_train: int = 2000, max_dev: int = 500, max_test: int = 1000, warmup: float = 0.1,
        weight_decay: float = 0.01, eval_batch_size: int = 64, doc_stride: int = 128, max_answer_tokens: int = 30,
        progress: bool = True, per_example: bool = False) -> dict:
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    spec = get_task(task)
    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not an exported Hugging Face model folder (no config.json)")
    defaults = DEFAULTS[spec.kind]
    steps, lr = int(steps or defaults["steps"]), float(lr or defaults["lr"])
    batch_size = int(batch_size or defaults["batch_size"])
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    rows, stats = load_splits(spec, data)
    train, dev, test = capped(rows["train"], spec, max_train), capped(rows["dev"], spec, max_dev), \
        capped(rows["test"], spec, max_test)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_model(model_dir, spec, init, seed)
    max_len = min(int(max_len or spec.max_len), getattr(model.config, "max_position_embeddings", 10 ** 6))
    type_ids = getattr(model.config, "type_vocab_size", 0) >= 2
    encode = Encoder(tokenizer, spec, max_len, type_ids, doc_stride)
    trainer, train_loss = fine_tune(model, tokenizer, spec, encode(train, train=True)[0], seed, steps, batch_size,
                                    eval_batch_size, lr, warmup, weight_decay, progress)
    result = {"task": spec.name, "kind": spec.kind, "model": str(model_dir), "init": init, "seed": seed,
              "metric": spec.metric, "chance": 100 * spec.chance,
              "n": {"train": len(train), "dev": len(dev), "test": len(test)}, "data": stats,
              "recipe": {"steps": steps, "lr": lr, "batch_size": batch_size, "max_len": max_len, "warmup": warmup,
                         "weight_decay": weight_decay, "max_train": max_train, "max_dev": max_dev,
                         "max_test": max_test},
              "train_loss": train_loss, "params": sum(p.numel() for p in model.parameters()),
              "device": str(trainer.args.device)}
    for role, part in (("dev", dev), ("test", test)):
        if not part:
            continue
        feats, meta = encode(part, train=False)
        output = trainer.predict(feats)
        result[role], per = score(spec, part, output, meta, max_answer_tokens)
        if role == "test" and per_example:
            result["per_example"] = per.tolist()
    if spec.kind == "span":
        result["test_span_ceiling"] = 100 * span_ceiling(test, tokenizer)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("%s %s seed %d: dev %s test %s", spec.name, init, seed, result.get("dev"), result.get("test"))
    return result
