"""T5-PEGASUS pseudo-summary pairs (Su Jianlin, 2021).

A document is split into sentences; about a quarter of them (not necessarily
contiguous) are chosen greedily so that the chosen sentences, concatenated in
order, share the longest possible character-level LCS with the remaining
sentences concatenated in order.  The chosen sentences become the ``target``
(pseudo summary), the rest the ``source``.

Score.  For summary S and rest R, ``score = ROUGE-L F1 = 2·LCS(S,R) / (|S|+|R|)``.
Since S and R partition the document, ``|S|+|R|`` is the document length, so
maximising F1 is the same as maximising the LCS, which is exactly Su's
criterion; F1 is reported because it is comparable across documents.

Run: ``python -m pipeline.pairs --data data/clean --out data/pairs/t5-pegasus``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
from typing import Any, Iterable, Iterator, NamedTuple

import apache_beam as beam

from pipeline import corpus
from pipeline.events import DOCS, Keep, ReadEach, Select, Tag
from pipeline.lcs import char_masks, lcs_with_masks
from pipeline.pair_config import PairConfig
from pipeline.progress import Progress
from pipeline.progress import log as progress_log
from pipeline.sentences import split_sentences


# --------------------------------------------------------------------------
# Configuration and pure selection functions
# --------------------------------------------------------------------------


class Rejected(NamedTuple):
    """A document that yields no pair, and why (the key in stats["rejected"])."""

    id: Any
    reason: str


def summary_size(n: int, ratio: float = 0.25) -> int:
    """Number of sentences to choose: round-half-up(ratio·n), at least 1, at most n-1."""
    k = int(ratio * n + 0.5)
    return max(1, min(k, n - 1))


def rouge_l_f1(lcs: int, len_summary: int, len_rest: int) -> float:
    """ROUGE-L F1 from an LCS length: 2PR/(P+R) with P=lcs/|S|, R=lcs/|rest|."""
    if lcs == 0:
        return 0.0
    return 2.0 * lcs / (len_summary + len_rest)


class _Doc:
    """A sentence list with the bit masks that make repeated LCS calls cheap.

    One set of match masks over the whole document serves every candidate:
    sentences that are in the summary are switched off in ``allowed``, which
    is equivalent to deleting them from the "rest" string.
    """

    def __init__(self, sentences: list[str]):
        self.sentences = sentences
        self.text = "".join(sentences)
        self.masks = char_masks(self.text)
        self.spans = []  # bit mask of each sentence's character positions
        offset = 0
        for s in sentences:
            self.spans.append(((1 << len(s)) - 1) << offset)
            offset += len(s)
        self.full = (1 << len(self.text)) - 1

    def score(self, chosen: Iterable[int]) -> tuple[int, float]:
        """(LCS, ROUGE-L F1) between the chosen sentences and the rest, both in order."""
        chosen = sorted(chosen)
        summary = "".join(self.sentences[i] for i in chosen)
        allowed = self.full
        for i in chosen:
            allowed &= ~self.spans[i]
        lcs = lcs_with_masks(self.masks, len(self.text), summary, allowed)
        return lcs, rouge_l_f1(lcs, len(summary), len(self.text) - len(summary))


def pseudo_summary(sentences: list[str], ratio: float = 0.25) -> tuple[list[int], float]:
    """Greedy T5-PEGASUS selection: (sorted chosen indices, ROUGE-L F1).

    Each step adds the sentence whose addition gives the highest score
    (ties: lowest index) until ``summary_size(n, ratio)`` are chosen.
    """
    n = len(sentences)
    if n == 0:
        return [], 0.0
    doc = _Doc(sentences)
    chosen: list[int] = []
    best_f1 = 0.0
    for _ in range(summary_size(n, ratio)):
        best_i, best_lcs = -1, -1
        for i in range(n):
            if i in chosen:
                continue
            lcs, f1 = doc.score(chosen + [i])
            if lcs > best_lcs:  # same denominator for every candidate: LCS decides
                best_i, best_lcs, best_f1 = i, lcs, f1
        chosen.append(best_i)
    return sorted(chosen), best_f1


def exhaustive_pseudo_summary(sentences: list[str], ratio: float = 0.25) -> tuple[list[int], float]:
    """The optimum over all subsets of size ``summary_size(n, ratio)``; for small n only.

    Ties go to the lexicographically smallest index tuple.  Cost is C(n, k)
    LCS calls, so this is a yardstick for the greedy search, not a tool.
    """
    n = len(sentences)
    if n == 0:
        return [], 0.0
    doc = _Doc(sentences)
    best: tuple[int, float, tuple[int, ...]] = (-1, 0.0, ())
    for subset in itertools.combinations(range(n), summary_size(n, ratio)):
        lcs, f1 = doc.score(subset)
        if lcs > best[0]:
            best = (lcs, f1, subset)
    return list(best[2]), best[1]


def document_sentences(text: str, config: PairConfig | None = None) -> list[str]:
    """The sentences make_pair selects from: split, then the leading ones within the budget."""
    config = config or PairConfig()
    sentences = split_sentences(text, config.max_sentence_chars)
    budget = config.doc_budget
    if budget is None:
        return sentences
    total = 0
    for i, s in enumerate(sentences):
        total += len(s)
        if total > budget:
            return sentences[: max(1, i)]  # at least one sentence, even if over budget
    return sentences


def make_pair(doc: dict, **cfg: Any) -> dict | Rejected:
    """Build ``{"id", "text", "source", "target"}`` from ``{"id", "text"}``, or a ``Rejected``.

    The document's ``text`` is kept (the shard contract: id and text, pairs add
    source and target) so a pair can always be traced back and rebuilt.

    ``cfg`` are PairConfig fields (or ``config=PairConfig(...)``, which the
    Beam transform uses to validate once).  Reasons: "no_text" (text missing
    or not a string), "too_few_sentences" (fewer than ``min_sentences``
    within the document budget).
    """
    config = cfg.pop("config", None) or PairConfig(**cfg)
    doc_id = doc.get("id") if isinstance(doc, dict) else None
    text = doc.get("text") if isinstance(doc, dict) else None
    if not isinstance(text, str):
        return Rejected(doc_id, "no_text")
    sentences = document_sentences(text, config)
    if len(sentences) < config.min_sentences:
        return Rejected(doc_id, "too_few_sentences")
    chosen, _ = pseudo_summary(sentences, config.ratio)
    picked = set(chosen)
    target = "".join(sentences[i] for i in chosen)
    source = "".join(s for i, s in enumerate(sentences) if i not in picked)
    return {
        "id": doc_id,
        "text": text,
        "source": source[: config.max_source_chars],
        "target": target[: config.max_target_chars],
    }


# --------------------------------------------------------------------------
# Beam
# --------------------------------------------------------------------------


PAIRS, REJECTED, READ, ENTRY = "pairs", "rejected", "read", "entry"


def _pair_or_reject(keyed_doc: tuple[Any, dict], config: PairConfig) -> Iterator[tuple]:
    key, doc = keyed_doc
    result = make_pair(doc, config=config)
    if isinstance(result, Rejected):
        yield REJECTED, result.reason
    else:
        yield PAIRS, (key, result)


class BuildPseudoSummaryPairs(beam.PTransform):
    """``(key, {"id","text"})`` → events ``("pairs", (key, pair))`` and
    ``("rejected", reason)``.

    The key (e.g. the output shard) passes through untouched, so callers
    decide where pairs go: ``events = docs | BuildPseudoSummaryPairs(**cfg)``,
    then ``events | Select("pairs")`` and ``events | Select("rejected")``.
    """

    def __init__(self, **cfg: Any):
        super().__init__()
        self.config = PairConfig(**cfg)

    def expand(self, keyed_docs):
        return keyed_docs | "MakePair" >> beam.ParDo(_MakePairs(self.config))


class _MakePairs(beam.DoFn):
    """``_pair_or_reject`` per document, with a progress bar (pipeline/progress.py)."""

    def __init__(self, config: PairConfig):
        self.config = config

    def setup(self):
        self.progress = Progress("pseudo-summary pairs")

    def teardown(self):
        self.progress.close()

    def process(self, keyed_doc) -> Iterator[tuple]:
        self.progress.update(1, chars=len(keyed_doc[1].get("text") or ""))
        yield from _pair_or_reject(keyed_doc, self.config)


# An output shard is keyed by the plain tuple (split, index, count): plain
# tuples have a deterministic Beam coder, which GroupByKey requires.
ShardKey = tuple[str, int, int]


def input_shards(data_dir: str) -> list[tuple[ShardKey, str]]:
    """Output shard key for every input shard (manifest paths confined to
    the folder, sizes checked): pairs keep their document's split and shard."""
    by_split: dict[str, list[str]] = {}
    for entry in corpus.shard_entries(data_dir, "size"):
        by_split.setdefault(entry["split"], []).append(entry["url"])
    return [
        ((split, i, len(urls)), url)
        for split, urls in sorted(by_split.items())
        for i, url in enumerate(sorted(urls))
    ]


def _read_input_shard(shard: tuple[ShardKey, str]) -> Iterator[tuple]:
    """One input shard → events ``("docs", (key, doc))``, ``("rejected",
    "bad_json")`` and one ``("read", lines)``."""
    key, path = shard
    n = 0
    for _, line in corpus.iter_lines(path):
        n += 1
        try:
            yield DOCS, (key, json.loads(line))
        except json.JSONDecodeError:
            yield REJECTED, "bad_json"
    yield READ, n


def _write_shard(keyed: tuple[ShardKey, Iterable], out_dir: str) -> tuple[str, dict]:
    """Write one shard sorted by id, gzip with mtime=0 so reruns are byte-identical."""
    key, pairs = keyed
    pairs = [p for p in pairs if p is not None]  # None = the seed that makes empty shards exist
    pairs.sort(key=lambda p: (str(p["id"]), json.dumps(p, ensure_ascii=False, sort_keys=True)))
    rel = corpus.shard_path(*key)
    data = corpus.gzip_bytes(corpus.jsonl_bytes(pairs, separators=(",", ":")))
    corpus.write_bytes(corpus.join(out_dir, rel), data)
    return ENTRY, corpus.shard_entry(rel, key[0], data, len(pairs), sum(len(p["source"]) + len(p["target"]) for p in pairs))


def _write_summary(item, out_dir: str, config: PairConfig) -> Iterator[dict]:
    """manifest.json and stats.json from the summary events; runs once, last."""
    _, summary = item
    shards, rejected, read = [], {}, 0
    for kind, payload in summary:
        if kind == ENTRY:
            shards.append(payload)
        elif kind == REJECTED:
            rejected[payload[0]] = payload[1]
        else:
            read += payload
    written = sum(s["documents"] for s in shards)
    stats = {
        "read": read,
        "written": written,
        "rejected": dict(sorted(rejected.items())),
        "duplicates_exact": 0,  # pairs do no dedup; kept so the contract's identity holds
        "duplicates_near": 0,
        "written_by_split": {sp: sum(s["documents"] for s in shards if s["split"] == sp) for sp in corpus.SPLITS},
        "config": dataclasses.asdict(config),
    }
    if read != written + sum(stats["rejected"].values()):
        raise RuntimeError(f"accounting mismatch: {stats}")
    corpus.write_manifest(out_dir, shards, stats)
    yield stats


class WritePairShards(beam.PTransform):
    """(key, pair) → one shard per input shard (empty ones too); ``entry`` events."""

    def __init__(self, shards: list[tuple[ShardKey, str]], out_dir: str):
        super().__init__()
        self.keys = [key for key, _ in shards]
        self.out_dir = out_dir

    def expand(self, pairs):
        seeds = pairs.pipeline | "ShardSeeds" >> beam.Create([(key, None) for key in self.keys])
        return (
            (pairs, seeds)
            | "WithSeeds" >> beam.Flatten()
            | "ByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(_write_shard, self.out_dir)
        )


def build_pairs_pipeline(p: beam.Pipeline, shards: list[tuple[ShardKey, str]], out_dir: str, config: PairConfig):
    """The pairs pipeline on ``p``; every branch ends in the one sink, WriteSummary."""
    read = p | "Read" >> ReadEach(shards, _read_input_shard)
    built = (
        read
        | "Docs" >> Select(DOCS)
        | "SpreadDocs" >> beam.Reshuffle()
        | "Build" >> BuildPseudoSummaryPairs(**dataclasses.asdict(config))
    )
    entries = built | "Pairs" >> Select(PAIRS) | "Write" >> WritePairShards(shards, out_dir)
    rejected = (
        [read | "ReadRejected" >> Keep(REJECTED), built | "BuildRejected" >> Keep(REJECTED)]
        | "AllRejected" >> beam.Flatten()
        | "Reasons" >> Select(REJECTED)
        | "CountReasons" >> beam.combiners.Count.PerElement()
        | "TagCounts" >> Tag(REJECTED)
    )
    return (
        [entries, rejected, read | "ReadCounts" >> Keep(READ)]
        | "Summary" >> beam.Flatten()
        | "OneKey" >> beam.Map(lambda event: (None, event))
        | "Gather" >> beam.GroupByKey()
        | "WriteSummary" >> beam.FlatMap(_write_summary, out_dir, config)
    )


def build_pairs(
    data_dir: str,
    out_dir: str,
    runner: str = "DirectRunner",
    workers: int = 1,
    extra_args: list[str] | None = None,
    **cfg: Any,
) -> dict:
    """Build pseudo-summary pairs for a cleaned corpus folder; returns stats.json's content.

    Input: ``data_dir/manifest.json`` plus gzip JSON-lines shards of
    ``{"id","text"}``.  Output: ``out_dir/{train,valid}/shard-*.jsonl.gz``
    (one output shard per input shard, same split, sorted by id),
    ``manifest.json`` and ``stats.json``.
    """
    from pipeline.run import pipeline_options

    config = PairConfig(**cfg)
    data_dir, out_dir = corpus.absolute(data_dir), corpus.absolute(out_dir)
    shards = input_shards(data_dir)
    corpus.check_output_apart(out_dir, [data_dir], [data_dir])
    corpus.clear_outputs(out_dir)
    with corpus.scratch_tmpdir():
        with beam.Pipeline(options=pipeline_options(runner, workers, extra_args or [])) as p:
            build_pairs_pipeline(p, shards, out_dir, config)
    return corpus.read_json(corpus.join(out_dir, corpus.STATS))


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.pairs",
        description="T5-PEGASUS pseudo-summary pairs from a cleaned corpus. "
        "Unknown flags are passed to Beam as pipeline options.",
    )
    parser.add_argument("--data", required=True, help="cleaned corpus folder (has manifest.json)")
    parser.add_argument("--out", required=True, help="output folder")
    defaults = PairConfig()
    parser.add_argument("--ratio", type=float, default=defaults.ratio)
    parser.add_argument("--max-source-chars", type=int, default=defaults.max_source_chars)
    parser.add_argument("--max-target-chars", type=int, default=defaults.max_target_chars)
    parser.add_argument("--min-sentences", type=int, default=defaults.min_sentences)
    parser.add_argument("--max-sentence-chars", type=int, default=defaults.max_sentence_chars)
    parser.add_argument(
        "--max-doc-chars", type=int, default=None,
        help="use only the leading sentences within this many chars (default: source+target max; <=0: all)",
    )
    parser.add_argument("--runner", default="DirectRunner")
    parser.add_argument("--workers", type=int, default=1)
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger(progress_log.name).setLevel(logging.INFO)  # a bar, or a line every 30 s
    stats = build_pairs(
        args.data,
        args.out,
        runner=args.runner,
        workers=args.workers,
        extra_args=extra,
        ratio=args.ratio,
        max_source_chars=args.max_source_chars,
        max_target_chars=args.max_target_chars,
        min_sentences=args.min_sentences,
        max_sentence_chars=args.max_sentence_chars,
        max_doc_chars=args.max_doc_chars,
    )
    json.dump(stats, sys.stdout, ensure_ascii=False, indent=2, sort_keys=True)
    print()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except corpus.CorpusError as exc:  # missing/unsafe manifest, output inside the input: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
