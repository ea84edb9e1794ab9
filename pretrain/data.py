"""Streaming, rank-sharded, resumable reading of the pipeline's JSONL.gz shards.

Why this shape: the corpus never has to fit in memory (one shard is read at a
time), every rank sees a disjoint slice (record ``i`` of the global stream goes
to rank ``i % world``), and the position is three integers (epoch, shard
cursor, record cursor) so a resumed run continues with exactly the next
record -- nothing seen twice, nothing skipped.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Iterator

from pipeline import corpus


DataError = corpus.CorpusError  # missing, unreadable, damaged or unsafe data (one line naming the file)


def list_shards(data_dir: str | Path, split: str, level: str = "size") -> list[str]:
    """Shards of a split, in manifest order (any Beam filesystem: local, gs://,
    s3://); manifest paths are confined to the folder and sizes checked."""
    return corpus.list_shards(str(data_dir), split, level)


def read_shard(path: str) -> list[dict]:
    return list(corpus.read_records(str(path)))


@dataclass
class StreamState:
    epoch: int = 0
    shard_cursor: int = 0      # index into this epoch's shard order
    record_cursor: int = 0     # index into that shard's shuffled records
    epoch_offset: int = 0      # records of this epoch in shards before the current one
    consumed: int = 0          # records this rank has yielded, ever


class ShardStream:
    """Endless, deterministic, resumable record stream for one rank.

    Each epoch permutes the shard order and the records inside each shard with
    a seed derived from (seed, epoch, shard); global record k of an epoch goes
    to rank k % world_size.
    """

    def __init__(self, shards: list[str], rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, loop: bool = True):
        if not shards:
            raise DataError("no shards to read (is the split empty?)")
        self.shards = list(shards)
        self.rank, self.world = rank, world_size
        self.seed, self.shuffle, self.loop = seed, shuffle, loop
        self.state = StreamState()
        self._cache: tuple[int, int, list] | None = None

    def _shard_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(f"{self.seed}-order-{epoch}").shuffle(order)
        return order

    def _records(self, epoch: int, shard_index: int) -> list:
        if self._cache and self._cache[:2] == (epoch, shard_index):
            return self._cache[2]
        recs = read_shard(self.shards[shard_index])
        if self.shuffle:
            random.Random(f"{self.seed}-records-{epoch}-{shard_index}").shuffle(recs)
        self._cache = (epoch, shard_index, recs)
        return recs

    def __iter__(self) -> Iterator[dict]:
        st = self.state
        while True:
            order = self._shard_order(st.epoch)
            while st.shard_cursor < len(order):
                recs = self._records(st.epoch, order[st.shard_cursor])
                base = st.epoch_offset
                while st.record_cursor < len(recs):
                    k = st.record_cursor
                    st.record_cursor += 1
                    if (base + k) % self.world == self.rank:
                        st.consumed += 1
                        yield recs[k]
                st.shard_cursor += 1
                st.record_cursor = 0
                st.epoch_offset += len(recs)
            if not self.loop:
                return
            st.epoch += 1
            st.shard_cursor = 0
            st.epoch_offset = 0

    def state_dict(self) -> dict:
        return asdict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = StreamState(**state)


def batches(stream: ShardStream, batch_size: int) -> Iterator[list[dict]]:
    batch = []
    for rec in stream:
        batch.append(rec)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
