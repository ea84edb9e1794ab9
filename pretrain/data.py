"""Training data: one global sample order, mixing, per-rank reads, background loading, and a
position that resumes on any number of processes.

Order. A source's samples (the records of its JSON-lines shards, or the samples of its token
shards, ``pretrain.token_shards``) are numbered per epoch: shards in a shuffled order, each
shard's samples shuffled, both seeded by (run seed, epoch, shard), so only one shard's
permutation is ever in memory. The n-th sample a source ever gives is sample n mod N of its
epoch n // N: epochs are per source.

Length grouping (``data.length_group: W``, off by default). Each shard's shuffled samples are
cut into windows of W and each window is sorted by sample length, longest first: a pair's source
or a document's text, in characters on the text path and tokens on the token path (transformers'
``group_by_length`` sorts by tokens). The samples of one micro-batch are then alike in length and
pad little (packing them pads more for T5 pairs: their targets fill a row first). Still a
function of (seed, epoch, shard) alone: resumes and world sizes are unaffected. Token shards of
packed document windows (all one length) are left as they are. It changes what a step learns
(BENCHMARKS.md, "T5 against a length-grouped peer").

Mixing. ``data.mix`` sources are interleaved by Sainte-Lague's divisor sequence: the next
sample comes from the source whose (count + 1/2) / weight is smallest (ties: the first listed).
Deterministic, vectorized (a merge of each source's sorted sequence), within about one sample
of the weights' proportions at every point (at most 1.12 over 300 random weightings of 2-5
sources; plain (count + 1) / weight strays by up to 1.9), and resumable from the per-source
counts alone.

Position. ``{"consumed": n, "counts": [per source]}`` counts the samples all ranks together
consumed; it is the same on every rank. A global micro-batch is the next world x
micro_batch_size samples and rank r trains on the r-th slice of it, so a checkpoint resumes
on any number of processes and, within an epoch, no sample is skipped and none repeated.

Loading. On the fly (``data.tokens: false``): the trainer reads its slice of the text records
and calls ``objective.collate``, which draws from the trainer's checkpointed RNG. Token
shards (``data.tokens: true``): ``data.loader_workers`` background processes read only this
rank's samples, by random access into the memory-mapped shards, and run
``objective.collate_tokens`` with a seed derived from the batch's global position (so a
resumed run, or any number of workers, draws the same masks), ``data.prefetch`` batches
ahead, into pinned memory on GPU.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline import corpus
from pretrain.token_shards import TokenShard, TokenShardError

DataError = corpus.CorpusError  # missing, unreadable, damaged or unsafe data (one line naming the file)
OPEN_SHARDS = 8                 # token shards a reader keeps mapped
CACHED_ORDERS = 4               # shard permutations an order keeps


def list_shards(data_dir: str | Path, split: str, level: str = "size") -> list[str]:
    """Shards of a split, in manifest order (any Beam filesystem: local, gs://,
    s3://); manifest paths are confined to the folder and sizes checked."""
    return corpus.list_shards(str(data_dir), split, level)


def read_shard(path: str) -> list[dict]:
    return list(corpus.read_records(str(path)))


# ---------------------------------------------------------------- where samples come from
@dataclass(frozen=True)
class Source:
    """One training source: a dataset folder of text records and, on the token path, its token shards."""
    name: str
    weight: float
    data_dir: str
    tokens_dir: str = ""


def sources(cfg, objective) -> list[Source]:
    """The run's training sources: ``data.mix`` (with their stage folders), else the objective's data."""
    d = cfg.data
    if not d.mix:
        return [Source("train", 1.0, objective.train_dir, d.tokens_dir if d.tokens else "")]
    pairs = objective.spec.data == "pairs"
    return [Source(m.name or Path(m.path).name, m.weight, m.pairs_dir if pairs else m.path,
                   m.tokens_dir if d.tokens else "") for m in d.mix]


class RecordShards:
    """Text records by (shard, index), from manifest entries (``url``, ``documents``); a shard is
    parsed when first needed."""

    def __init__(self, entries: list[dict]):
        self.entries = entries
        self.sizes = [int(e.get("documents", 0)) for e in self.entries]
        self._cache: tuple[int, list] | None = None

    @classmethod
    def split(cls, data_dir: str, split: str, level: str = "size") -> "RecordShards":
        return cls(corpus.split_entries(str(data_dir), split, level))

    def records(self, shard: int) -> list[dict]:
        if self._cache is None or self._cache[0] != shard:
            url, size = self.entries[shard]["url"], self.sizes[shard]
            recs = read_shard(url)
            if len(recs) != size:
                raise DataError(f"{url}: {len(recs)} records, its manifest says {size} (damaged or replaced shard)")
            self._cache = (shard, recs)
        return self._cache[1]

    def read(self, shard: int, local: int) -> tuple[dict, object]:
        record = self.records(shard)[local]
        return record, record.get("id")

    def lengths(self, shard: int) -> np.ndarray:
        """Characters of each record's first part (a pair's source, else its text): the grouping key."""
        return np.fromiter((len(r.get("source") or r.get("text") or "") for r in self.records(shard)),
                           dtype=np.int64, count=self.sizes[shard])


class TokenSamples:
    """The samples of a split's token shards, read by random access (a few shards mapped at a time)."""

    def __init__(self, tokens_dir: str, split: str, window: int, level: str = "size"):
        self.entries = corpus.split_entries(str(tokens_dir), split, level)
        self.window = window
        self.sizes = [-(-int(e["tokens"]) // window) if e.get("kind") == "docs" else int(e["documents"])
                      for e in self.entries]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self._open: OrderedDict[int, TokenShard] = OrderedDict()

    def __getstate__(self):       # background workers open their own maps
        return {**self.__dict__, "_open": OrderedDict()}

    def shard(self, i: int) -> TokenShard:
        if i not in self._open:
            try:
                self._open[i] = TokenShard(self.entries[i]["url"])
            except TokenShardError as exc:
                raise DataError(str(exc)) from None
            if len(self._open) > OPEN_SHARDS:
                self._open.popitem(last=False)
        self._open.move_to_end(i)
        return self._open[i]

    def read(self, shard: int, local: int) -> tuple[dict, int]:
        return self.shard(shard).sample(local, self.window), int(self.offsets[shard] + local)

    def lengths(self, shard: int) -> np.ndarray | None:
        """Tokens of each sample's first segment (a pair's source); None for packed document windows."""
        return self.shard(shard).first_segment_lengths()


class Order:
    """Epoch e of a source: its shards in a shuffled order, each shard's samples shuffled (and, with
    ``group`` and a ``lengths(shard)`` function, sorted by length within windows of ``group``)."""

    def __init__(self, sizes: list[int], seed: int, shuffle: bool = True, where: str = "data", group: int = 0,
                 lengths=None):
        self.group, self.lengths = group, lengths
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.total = int(self.sizes.sum())
        if self.total == 0:
            raise DataError(f"{where}: no samples to read (is the split empty?)")
        self.seed, self.shuffle = seed & (2**63 - 1), shuffle
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None
        self._perms: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _shards(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch is None or self._epoch[0] != epoch:
            order = np.arange(len(self.sizes))
            if self.shuffle:
                order = np.random.default_rng([self.seed, 0, epoch]).permutation(order)
            self._epoch = (epoch, order, np.cumsum(self.sizes[order]))
        return self._epoch[1], self._epoch[2]

    def _perm(self, epoch: int, shard: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        key = (epoch, shard)
        if key not in self._perms:
            perm = np.random.default_rng([self.seed, 1, epoch, shard]).permutation(int(self.sizes[shard]))
            if self.group > 1 and self.lengths is not None:
                perm = group_by_length(perm, self.lengths(shard), self.group)
            self._perms[key] = perm
            if len(self._perms) > CACHED_ORDERS:
                self._perms.popitem(last=False)
        return self._perms[key]

    def locate(self, index) -> tuple[np.ndarray, np.ndarray]:
        """(shard, sample in shard) of each of the source's ``index``-th samples (any epochs), vectorized."""
        index = np.asarray(index, dtype=np.int64)
        epochs, k = np.divmod(index, self.total)
        shard, local = np.empty_like(index), np.empty_like(index)
        for epoch in np.unique(epochs).tolist():
            sel = epochs == epoch
            order, ends = self._shards(epoch)
            slot = np.searchsorted(ends, k[sel], side="right")
            shard[sel] = order[slot]
            local[sel] = k[sel] - (ends[slot] - self.sizes[order[slot]])
            for s in np.unique(shard[sel]).tolist():
                perm = self._perm(epoch, s)
                if perm is not None:
                    mine = sel & (shard == s)
                    local[mine] = perm[local[mine]]
        return shard, local


def group_by_length(perm: np.ndarray, lengths: np.ndarray | None, window: int) -> np.ndarray:
    """``perm`` cut into windows of ``window`` and each sorted by ``lengths`` (longest first; ties
    keep their shuffled order)."""
    if lengths is None:
        return perm
    return perm[np.lexsort((-np.asarray(lengths)[perm], np.arange(len(perm)) // window))]


# ---------------------------------------------------------------- the global order and this rank's share
def interleave(counts: list[int], weights: list[float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sources and per-source indices of the next ``n`` samples after ``counts``: the source with the
    smallest (count + 1/2) / weight goes first."""
    counts_a = np.asarray(counts, dtype=np.int64)
    if len(weights) == 1:
        return np.zeros(n, dtype=np.int64), counts_a[0] + np.arange(n, dtype=np.int64)
    k = np.arange(1, n + 1, dtype=np.int64)
    times = (counts_a[:, None] + k[None, :] - 0.5) / np.asarray(weights, dtype=np.float64)[:, None]
    src = np.repeat(np.arange(len(weights)), n)
    first = np.lexsort((src, times.ravel()))[:n]
    return src[first], counts_a[src[first]] + first % n


def start_state(num_sources: int) -> dict:
    return {"consumed": 0, "counts": [0] * num_sources}


@dataclass
class Plan:
    """This rank's slice of one global micro-batch."""
    sources: list[int]
    indices: list[int]
    first: int                # global position of the slice's first sample
    seed: int                 # collate_tokens' randomness: a function of the position only
    after: dict               # the position once the whole global micro-batch is consumed


def batch_seed(seed: int, position: int) -> int:
    return int(np.random.SeedSequence([seed & (2**63 - 1), position]).generate_state(1, np.uint64)[0] >> 1)


def plans(weights: list[float], state: dict, world: int, rank: int, micro_batch: int, seed: int) -> Iterator[Plan]:
    """This rank's slices of the global micro-batches from ``state`` on."""
    consumed, counts = int(state["consumed"]), [int(c) for c in state["counts"]]
    if len(counts) != len(weights):
        raise DataError(f"the checkpoint's data position has {len(counts)} sources, the run has {len(weights)} "
                        f"(data.mix changed); start a new RUN")
    n, lo = world * micro_batch, rank * micro_batch
    while True:
        src, idx = interleave(counts, weights, n)
        counts = [c + int(b) for c, b in zip(counts, np.bincount(src, minlength=len(weights)))]
        first = consumed + lo
        consumed += n
        yield Plan(src[lo:lo + micro_batch].tolist(), idx[lo:lo + micro_batch].tolist(), first,
                   batch_seed(seed, first), {"consumed": consumed, "counts": list(counts)})


@dataclass
class Meta:
    """What came with a batch: its sample ids, the global position of its first sample, the
    position after its global micro-batch, and how many samples each source gave (a plain
    object, so the DataLoader passes it through without converting every element)."""
    ids: list
    first: int
    after: dict
    sources: list


class Reader:
    """Samples of plans: each source's order locates them, its shards give them."""

    def __init__(self, sources: list, orders: list[Order], names: list[str]):
        self.sources, self.orders, self.names = sources, orders, names

    def fetch(self, plan: Plan) -> tuple[list, list]:
        sources, indices = np.asarray(plan.sources, dtype=np.int64), np.asarray(plan.indices, dtype=np.int64)
        where = np.empty((len(indices), 2), dtype=np.int64)
        for s in np.unique(sources).tolist():
            where[sources == s] = np.stack(self.orders[s].locate(indices[sources == s]), axis=1)
        samples, ids = [], []
        for s, (shard, local) in zip(sources.tolist(), where.tolist()):
            sample, sid = self.sources[s].read(shard, local)
            samples.append(sample)
            ids.append(sid if len(self.sources) == 1 else f"{self.names[s]}:{sid}")
        return samples, ids

    def meta(self, plan: Plan, ids: list) -> Meta:
        return Meta(ids, plan.first, plan.after, np.bincount(plan.sources, minlength=len(self.sources)).tolist())


class _TokenBatches:
    """Map-style dataset whose keys are plans: a worker reads and collates one rank batch."""

    def __init__(self, reader: Reader, objective):
        self.reader, self.objective = reader, objective

    def __getitem__(self, plan: Plan):
        samples, ids = self.reader.fetch(plan)
        return self.objective.collate_tokens(samples, plan.seed), self.reader.meta(plan, ids)


class TrainData:
    """This rank's training batches from a position: ``for batch, meta in data`` (``Meta``); ``data.state`` is
    the position after the last batch handed out (what a checkpoint saves)."""

    def __init__(self, cfg, objective, rank: int, world: int, state: dict | None = None, pin_memory: bool = False):
        self.cfg, self.objective, self.rank, self.world, self.pin = cfg, objective, rank, world, pin_memory
        srcs = sources(cfg, objective)
        self.names = [s.name for s in srcs]
        self.weights = [s.weight for s in srcs]
        self.tokens = bool(srcs[0].tokens_dir)
        shards = [TokenSamples(s.tokens_dir, "train", objective.window()) if self.tokens
                  else RecordShards.split(s.data_dir, "train") for s in srcs]
        self.orders = [Order(sh.sizes, cfg.train.seed, where=f"{s.tokens_dir or s.data_dir} (train)",
                             group=cfg.data.length_group, lengths=sh.lengths)
                       for s, sh in zip(srcs, shards)]
        self.reader = Reader(shards, self.orders, self.names)
        self.state = state or start_state(len(srcs))

    def epochs(self) -> dict[str, float]:
        """Epochs of each source consumed so far (for the metrics)."""
        return {n: c / o.total for n, c, o in zip(self.names, self.state["counts"], self.orders)}

    def __iter__(self):
        t = self.cfg.train
        steps = plans(self.weights, self.state, self.world, self.rank, t.micro_batch_size, t.seed)
        if not self.tokens:
            for plan in steps:
                records, ids = self.reader.fetch(plan)
                batch = self.objective.collate(records)
                self.state = plan.after
                yield batch, self.reader.meta(plan, ids)
            return
        import torch.utils.data

        workers = self.cfg.data.loader_workers
        if workers < 0:   # auto: on CPU, workers only take cores from the trainer's threads (measured: more wait, not less)
            workers = 2 if self.pin else 0
        loader = torch.utils.data.DataLoader(
            _TokenBatches(self.reader, self.objective), sampler=steps, batch_size=None, num_workers=workers,
            pin_memory=self.pin, prefetch_factor=self.cfg.data.prefetch if workers else None,
            # the workers' base seed comes from this generator, not the global one: a resumed run
            # starts the loader after restoring the RNG, and one extra draw would shift dropout
            generator=torch.Generator().manual_seed(t.seed))
        for batch, meta in loader:
            self.state = meta.after
            yield batch, meta


def valid_batches(cfg, objective, rank: int, world: int) -> Iterator[dict]:
    """This rank's validation batches: the valid split in manifest order, once, sliced like training."""
    d, t = cfg.data, cfg.train
    if d.tokens:
        source = TokenSamples(d.tokens_dir, "valid", objective.window())
    else:
        source = RecordShards.split(objective.valid_dir, "valid")
    if not source.sizes:
        return
    order = Order(source.sizes, 0, shuffle=False)
    reader = Reader([source], [order], ["valid"])
    for plan in plans([1.0], start_state(1), world, rank, t.micro_batch_size, 0):
        plan.indices = [i for i in plan.indices if i < order.total]
        plan.sources = plan.sources[:len(plan.indices)]
        if not plan.indices:
            return
        samples, _ = reader.fetch(plan)
        yield objective.collate_tokens(samples, plan.seed) if d.tokens else objective.collate(samples)


class ShardStream:
    """Records of some shards for one rank, in the training order with one-record micro-batches
    (global record k goes to rank k % world): a plain reader for tools, benches and the held-out
    records of ``objective.evaluate``."""

    def __init__(self, shards: list[str], rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, loop: bool = True):
        if not shards:
            raise DataError("no shards to read (is the split empty?)")
        self.shards, self.rank, self.world = list(shards), rank, world_size
        self.seed, self.shuffle, self.loop = seed, shuffle, loop
        self.state = start_state(1)

    def __iter__(self) -> Iterator[dict]:
        source = RecordShards([{"url": s, "documents": len(read_shard(s))} for s in self.shards])
        order = Order(source.sizes, self.seed, self.shuffle, where=self.shards[0])
        for plan in plans([1.0], self.state, self.world, self.rank, 1, self.seed):
            if not self.loop and plan.indices[0] >= order.total:
                return
            self.state = plan.after
            shard, local = order.locate(plan.indices)
            yield source.read(int(shard[0]), int(local[0]))[0]

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)


def batches(stream, batch_size: int) -> Iterator[list[dict]]:
    batch = []
    for rec in stream:
        batch.append(rec)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
