"""T5 span corruption (Raffel et al. 2020): replace random spans of a document with sentinels,
train the model to write the dropped spans.

For a window of ``train.max_source_len - 1`` tokens, ``noise_density`` of them
(15 %) are dropped in spans of mean length ``mean_noise_span_length`` (3); each span
becomes one sentinel ``<extra_id_k>`` in the input, and the target lists
``<extra_id_k> span_k`` in order, then ``[SEP]``. Span lengths follow T5's
``random_spans_noise_mask``: noise and non-noise lengths are random partitions, so
every input has exactly the same number of noise tokens and spans. Random numbers come
from Python's RNG, which the trainer seeds and checkpoints, so resumed runs draw the same
spans. It trains on the cleaned documents; no data stage of its own.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.typed_config import ConfigError, InvalidValue
from pretrain.models import T5Arch, t5_special_ids
from pretrain.objectives._t5 import T5Objective, pair_batch
from pretrain.objectives.base import ObjectiveSpec, Options


@dataclass
class SpanOptions(Options):
    noise_density: float = 0.15             # share of the window's tokens that are dropped
    mean_noise_span_length: float = 3.0

    def __post_init__(self):
        if not 0 < self.noise_density < 1:
            raise InvalidValue("noise_density", f"must be in (0, 1), got {self.noise_density}")
        if self.mean_noise_span_length < 1:
            raise InvalidValue("mean_noise_span_length", f"must be >= 1, got {self.mean_noise_span_length}")


def _partition(total: int, parts: int, rng: random.Random) -> list[int]:
    """``total`` split into ``parts`` positive lengths, uniformly at random."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def noise_mask(length: int, density: float, mean_span: float, rng: random.Random) -> np.ndarray:
    """T5's random_spans_noise_mask: ``round(length * density)`` noise tokens (at least one, and at
    least one kept) in ``round(noise / mean_span)`` spans; the mask starts with kept tokens."""
    if length < 2:
        return np.zeros(length, dtype=bool)
    noise = min(max(1, round(length * density)), length - 1)
    spans = max(1, min(round(noise / mean_span), noise, length - noise))
    runs = [n for pair in zip(_partition(length - noise, spans, rng), _partition(noise, spans, rng)) for n in pair]
    return np.repeat(np.tile([False, True], spans), runs)


def span_starts(mask) -> np.ndarray:
    """True where a noise span begins."""
    mask = np.asarray(mask, dtype=bool)
    before = np.zeros_like(mask)
    before[1:] = mask[:-1]
    return mask & ~before


def corrupt(ids: list[int], mask: list[bool], sentinels: list[int]) -> tuple[list[int], list[int]]:
    """(input with each noise span replaced by its sentinel, target of sentinel + span per span)."""
    ids, mask = np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)
    start = span_starts(mask)
    span_sentinels = np.asarray(sentinels, dtype=np.int64)[:int(start.sum())]
    inputs = ids.copy()
    inputs[start] = span_sentinels
    target = np.insert(ids[mask], (np.cumsum(mask) - 1)[start], span_sentinels)
    return inputs[~mask | start].tolist(), target.tolist()


class T5SpanObjective(T5Objective):
    spec = ObjectiveSpec(
        name="t5-span", arch=T5Arch, options=SpanOptions, data="clean", eval_tasks=(),
        finetune_suite=("thucnews_titles", "lcqmc"),
        required_tokens=("pad",),
        intended_use="Chinese text generation: fine-tune for sequence-to-sequence tasks (plain T5 span "
                     "corruption pretraining, the baseline T5 PEGASUS improves on).")

    def __init__(self, cfg, tokenizer=None):
        super().__init__(cfg, tokenizer)
        tok = self.tokenizer
        self.sentinels = [i for i in tok.convert_tokens_to_ids([f"<extra_id_{k}>" for k in range(100)])
                          if i is not None and i != tok.unk_token_id]
        if not self.sentinels:
            raise ConfigError(f"{cfg.tokenizer.dir}: tokenizer has no <extra_id_N> sentinel tokens (t5-span needs them)")

    def collate(self, records: list[dict]) -> dict[str, torch.Tensor]:
        docs = self.tokenizer([r["text"] for r in records], add_special_tokens=False, verbose=False)["input_ids"]
        return self.corrupted_batch(docs, random, window=True)

    def collate_tokens(self, samples: list[dict], seed: int) -> dict[str, torch.Tensor]:
        """Packed windows of ``max_source_len - 1`` tokens (T5's own preprocessing), span-corrupted."""
        return self.corrupted_batch([s["ids"] for s in samples], random.Random(seed))

    def corrupted_batch(self, docs: list, rng, window: bool = False) -> dict[str, torch.Tensor]:
        """Span-corrupt each document (first a random window of a longer one, when ``window``)."""
        t, o, tok = self.cfg.train, self.opts, self.tokenizer
        room, eos = t.max_source_len - 1, t5_special_ids(tok)["eos"]
        sources, targets = [], []
        for ids in docs:
            if window and len(ids) > room:
                start = rng.randrange(len(ids) - room + 1)
                ids = ids[start:start + room]
            mask = noise_mask(len(ids), o.noise_density, o.mean_noise_span_length, rng)
            if span_starts(mask).sum() > len(self.sentinels):    # at most one span per sentinel the vocabulary has
                mask = noise_mask(len(ids), o.noise_density, len(ids) / len(self.sentinels), rng)
            src, tgt = corrupt(ids, mask, self.sentinels)
            sources.append([*src, eos])
            targets.append([*tgt[:t.max_target_len], eos])
        return pair_batch(tok, sources, targets, t.max_source_len, t.max_target_len, t.packing)
