"""The token stage: a dataset folder's records -> token shards, one per input shard (plain Beam).

Input: the objective's data (``spec.data``: the cleaned corpus, or T5-PEGASUS pairs).
Output, next to nothing else::

    OUT/train/shard-00000-of-0000N.tok   (pretrain.token_shards; one per input shard, same split)
    OUT/valid/...
    OUT/manifest.json   {"shards": [{"path", "split", "documents", "characters", "bytes", "sha256",
                                     "tokens", "kind", "dtype"}]}
    OUT/stats.json      read, written, rejected {reason: n}, tokens, the encoder used

Each input shard is read, encoded by the objective's ``encode_records`` with the fastest exact
engine (``token_shards.TextEncoder``: the bulk encoder where it applies) and written by one
worker: the step is one DoFn emitting tagged events (``pipeline.events``), and the summary
step writes the manifest last, so ``read == written + sum(rejected)`` is checked there.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterator

import apache_beam as beam
import numpy as np

from pipeline import corpus
from pipeline.events import ReadEach
from pipeline.pairs import input_shards
from pipeline.progress import Progress
from pretrain.token_shards import EXT, Encoded, TextEncoder, dtype_for, shard_bytes

ENTRY, READ, REJECTED = "entry", "read", "rejected"
CHUNK = 4096          # records encoded per call (bounds the memory of Python id lists)


def encode_shard(records, objective, encoder, dtype) -> tuple[list[Encoded], Counter, int]:
    """(encoded records as compact arrays, reject reasons, characters encoded) of one shard's records."""
    encoded, rejected, characters, chunk = [], Counter(), 0, []
    fields = ("source", "target") if objective.spec.tokens == "pairs" else ("text", "text_a", "text_b")

    def flush():
        nonlocal characters
        for record, out in zip(chunk, objective.encode_records(chunk, encoder)):
            if isinstance(out, str):
                rejected[out] += 1
                continue
            starts = None if out.starts is None else [np.asarray(s, np.uint8) for s in out.starts]
            encoded.append(Encoded([np.asarray(s, dtype) for s in out.segments], starts, out.flag))
            characters += sum(len(record[f]) for f in fields if isinstance(record.get(f), str))
        chunk.clear()

    for record in records:
        chunk.append(record)
        if len(chunk) == CHUNK:
            flush()
    flush()
    return encoded, rejected, characters


def token_shard(shard: tuple, objective, encoder, dtype, out_dir: str) -> Iterator[tuple]:
    """One (shard key, input shard) -> its token shard, written; events: one ``entry`` (its manifest
    entry), the ``read`` count and ``rejected`` (reason, count) pairs."""
    (split, index, count), url = shard
    read = 0

    def records():
        nonlocal read
        for record in corpus.read_records(url):
            read += 1
            yield record

    encoded, rejected, characters = encode_shard(records(), objective, encoder, dtype)
    kind = objective.spec.tokens
    data = shard_bytes(kind, encoded, dtype)
    rel = corpus.shard_path(split, index, count, EXT)
    corpus.write_bytes(corpus.join(out_dir, rel), data)
    entry = corpus.shard_entry(rel, split, data, len(encoded), characters)
    yield ENTRY, {**entry, "tokens": int(sum(len(s) for e in encoded for s in e.segments)), "kind": kind,
                  "dtype": dtype.name, "engine": encoder.engine}
    yield READ, read
    for reason, n in rejected.items():
        yield REJECTED, (reason, n)


class EncodeShard(beam.DoFn):
    """``token_shard`` on a worker, with the objective and the encoder built once per worker."""

    def __init__(self, cfg, out_dir: str, threads: int = 1):
        self.cfg, self.out_dir, self.threads = cfg, out_dir, threads

    def setup(self):
        self.objective = self.cfg.objective_class(self.cfg)
        self.encoder = TextEncoder(self.cfg.tokenizer.dir, self.threads)
        self.dtype = dtype_for(len(self.objective.tokenizer))
        self.progress = Progress("token shards", unit="shard")

    def teardown(self):
        self.progress.close()

    def process(self, shard) -> Iterator[tuple]:
        yield from token_shard(shard, self.objective, self.encoder, self.dtype, self.out_dir)
        self.progress.update(1)


def write_summary(item, out_dir: str) -> Iterator[dict]:
    """manifest.json and stats.json from every shard's events; runs once, last."""
    _, events = item
    shards, rejected, read = [], Counter(), 0
    for kind, payload in events:
        if kind == ENTRY:
            shards.append(payload)
        elif kind == REJECTED:
            rejected[payload[0]] += payload[1]
        else:
            read += payload
    stats = {"read": read, "written": sum(s["documents"] for s in shards), "rejected": dict(sorted(rejected.items())),
             "duplicates_exact": 0, "duplicates_near": 0,
             "tokens": {sp: sum(s["tokens"] for s in shards if s["split"] == sp) for sp in corpus.SPLITS},
             "engine": sorted({s.pop("engine") for s in shards})}
    if read != stats["written"] + sum(rejected.values()):
        raise RuntimeError(f"accounting mismatch: {stats}")
    corpus.write_manifest(out_dir, shards, stats)
    yield stats


def build_token_pipeline(p: beam.Pipeline, shards: list, out_dir: str, cfg, threads: int = 1):
    return (p
            | "Encode" >> ReadEach(shards, EncodeShard(cfg, out_dir, threads))
            | "OneKey" >> beam.Map(lambda event: (None, event))
            | "Gather" >> beam.GroupByKey()
            | "WriteSummary" >> beam.FlatMap(write_summary, out_dir))


def build_tokens(cfg, data_dir: str, out_dir: str, runner: str = "DirectRunner", workers: int = 1) -> dict:
    """Token shards of ``data_dir`` (a dataset folder with manifest.json) in ``out_dir``, for the
    objective and tokenizer of ``cfg``; returns stats.json's content."""
    from pipeline.run import pipeline_options

    data_dir, out_dir = corpus.absolute(data_dir), corpus.absolute(out_dir)
    shards = input_shards(data_dir)
    corpus.check_output_apart(out_dir, [data_dir], [data_dir])
    corpus.clear_outputs(out_dir)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    with corpus.scratch_tmpdir():
        with beam.Pipeline(options=pipeline_options(runner, workers)) as p:
            build_token_pipeline(p, shards, out_dir, cfg, threads)
    return corpus.read_json(corpus.join(out_dir, corpus.STATS))
