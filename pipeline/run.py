"""The corpus pipeline: read → clean → filter → checks (language, word lists, PII,
decontamination, quality score) → dedup → split → shard.

    python -m pipeline --input 'data/sample/*.jsonl' --output data/clean \\
        [--config configs/pipeline.yaml] [--runner DirectRunner] [--workers N] \\
        [--num-shards N] [--valid-fraction F] [--text-field text] [--id-field id] \\
        [any Beam pipeline flag, passed through to PipelineOptions]

``--input`` may repeat and takes globs, files, directories (recursive) and
``hf:NAME[:CONFIG][:SPLIT]``.  In Python: ``run_pipeline(inputs, output)``.

Output (OUT = --output)::

    OUT/train/shard-00000-of-0000N.jsonl.gz   {"id", "text", "source"} per line, sorted by id
    OUT/valid/shard-00000-of-0000M.jsonl.gz
    OUT/manifest.json   {"shards": [{"path", "split", "documents", "characters", "bytes", "sha256"}]}
    OUT/stats.json      read == written + sum(rejected) + duplicates_exact + duplicates_near;
                        duplicate_ids: {file: {"within_file", "across_files"}};
                        checks, langid, pii, decontamination(_sets), quality: pipeline/checks.py
    OUT/rejects/<reason>.jsonl.gz   {"id", "reason", "source", "line", "text"[, "kept_id"]}

``source`` is the input file (or ``hf:`` spec) a document came from.  Ids are
unique across the output: an input id that several written documents carry
is qualified on each of them as ``id@<file basename>:<line>`` and counted in
``duplicate_ids`` (exact duplicates are removed first, so a repeated record
is a duplicate, not a collision; ``kept_id`` in rejects is the id as read).
Near duplicates: a document is dropped when a verified near duplicate ranks
above it under ``dedup.keep`` (see pipeline/dedup.py for how this differs
from connected components).  An output folder that holds an input, or lies
inside an input folder, is refused before anything is deleted.

Everything from reading to writing the shards, rejects, manifest and stats
runs as Beam transforms; files are read and written through Beam's
FileSystems (``pipeline.corpus``); DoFns are pickle-safe and keep no
process-global state; every step emits ONE PCollection of tagged events
(no multi-output ParDo) and every branch ends in the one sink, Finalize
(tests/test_pipeline_graph.py checks both); the global decisions
(exact-duplicate groups, LSH buckets, near-duplicate drops, id collisions,
split plan) are GroupByKey / CoGroupByKey by hash partition, and the split
plan (one small dict) is the only side input.  So the same pipeline runs on
every runner.  Local paths are made absolute (workers of other runners do
not share the working directory).

Runners tested here (tests/test_pipeline_runners.py, same bytes as the
DirectRunner for both pipelines: manifest sha256 values, stats.json, rejects/):

DirectRunner, in memory (default; also ``make data``): Beam's bundle-based
DirectRunner, which passes the document batches between steps as Python objects
(faster and smaller than the FnApiRunner here; see ``pipeline_options``)::

    python -m pipeline --input ... --output OUT
    # the FnApiRunner in memory instead: --direct_running_mode=in_memory

DirectRunner, N processes (``make data WORKERS=N``; identical output)::

    python -m pipeline --input ... --output OUT --workers N
    # = --direct_running_mode=multi_processing --direct_num_workers=N

PortableRunner against Beam's local job service with an external SDK worker
pool: the cross-process path (job API, artifact staging, Fn API data and
state planes) that Flink, Spark and Dataflow use too::

    python -m apache_beam.runners.portability.local_job_service_main --port 8099 &
    PATH=.venv/bin:$PATH python -m apache_beam.runners.worker.worker_pool_main --service_port 50000 &
    python -m pipeline --input ... --output OUT --runner portable \
        --job_endpoint=127.0.0.1:8099 --environment_type=EXTERNAL --environment_config=127.0.0.1:50000

(the worker pool starts SDK workers as ``python``: that must be an
interpreter with this project installed, hence the PATH).

DaskRunner on a dask scheduler with worker processes (``pip install -e '.[dask]'``)::

    dask scheduler --host 127.0.0.1 --port 8786 &
    dask worker tcp://127.0.0.1:8786 --nthreads 1 &      # as many as wanted
    python -m pipeline --input ... --output OUT --runner dask \
        --dask_client_address=tcp://127.0.0.1:8786 --dask_npartitions=2

The scheduler and the workers must import this project (install it, or
PYTHONPATH=checkout).  Without ``--dask_client_address`` Beam starts a local
dask cluster.  The DaskRunner is a correctness check of multi-process
execution here, not the production engine: it computes only what feeds the
last transform and recomputes a side input for every partition that reads
it, so on large inputs it is several times slower than the DirectRunner.
bench/runners_bench.py measures all of these on one input; on the 2.1 MB
zhwiki sample (286 records, 2 cores, 2026-12-03), seconds for the corpus
pipeline / the pairs pipeline, every output byte-identical to the first run:
in memory 5.2 / 5.2, DirectRunner 2 processes 6.7 / 4.5, portable 5.4 / 5.7,
Dask 1 worker 6.9 / 4.5, Dask 2 workers 7.9 / 4.8 (service start-up excluded).

Not runnable offline, hence not tested here (they download a job-server jar,
or Prism its binary, when they start).  Workers outside this machine need the
package: ``pip wheel --no-deps . -w dist`` once, then
``--extra_package dist/zh_pretrain-0.1.0-py3-none-any.whl``; inputs and output
must be on storage every worker reaches (gs://, s3:// with
``apache-beam[aws]``, hdfs:// with ``--hdfs_host`` ...).

Flink (``make data RUNNER=flink RUNNER_ARGS='...'``)::

    python -m pipeline --input gs://bucket/raw/*.jsonl.gz --output gs://bucket/clean \
        --runner FlinkRunner --flink_master=HOST:8081 --flink_version=1.19 --parallelism=16 \
        --environment_type=DOCKER --sdk_container_image=apache/beam_python3.11_sdk:2.77.0 \
        --extra_package dist/zh_pretrain-0.1.0-py3-none-any.whl
    # a site that stages the job server itself: --flink_job_server_jar=/opt/beam/beam-runners-flink-1.19-job-server-2.77.0.jar
    # local smoke test of the Flink path: --flink_master=[local] --environment_type=LOOPBACK

Spark (``make data RUNNER=spark``)::

    python -m pipeline --input ... --output ... --runner SparkRunner \
        --spark_master_url=spark://HOST:7077 --spark_version=3 --environment_type=DOCKER \
        --sdk_container_image=apache/beam_python3.11_sdk:2.77.0 \
        --extra_package dist/zh_pretrain-0.1.0-py3-none-any.whl
    # a site that stages the job server itself: --spark_job_server_jar=/opt/beam/beam-runners-spark-3-job-server-2.77.0.jar
    # or --spark_submit_uber_jar --spark_rest_url=http://HOST:6066 for a cluster REST endpoint

Dataflow (``make data RUNNER=dataflow``)::

    python -m pipeline --input gs://bucket/raw/*.jsonl.gz --output gs://bucket/clean \
        --runner DataflowRunner --project=PROJECT --region=REGION \
        --temp_location=gs://bucket/tmp --staging_location=gs://bucket/staging \
        --extra_package dist/zh_pretrain-0.1.0-py3-none-any.whl \
        --max_num_workers=32 --experiments=use_runner_v2

The runner is always named explicitly (DirectRunner by default): Beam 2.77
otherwise picks the Prism runner, which it downloads first.  Aliases:
direct, portable, dask, flink, spark, dataflow, prism.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import zlib
from typing import Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import checks as checks_mod
from pipeline import clean as clean_mod
from pipeline import corpus, dedup, filters, hints, readers, shards
from pipeline.progress import Progress
from pipeline.progress import log as progress_log
from pipeline.config import PipelineConfig, as_dict, load_config
from pipeline.typed_config import ConfigError, build, parse_overrides
from pipeline.events import DOCS, REJECTS, Keep, ReadEach, Select, Tag, events, step

log = logging.getLogger("pipeline")

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
IN_MEMORY = "BundleBasedDirectRunner"     # the corpus pipeline's in-memory runner (pipeline_options)
RUNNER_ALIASES = {
    "direct": "DirectRunner",
    "portable": "PortableRunner",
    "dask": DASK_RUNNER,
    "daskrunner": DASK_RUNNER,
    "flink": "FlinkRunner",
    "spark": "SparkRunner",
    "dataflow": "DataflowRunner",
    "prism": "PrismRunner",
}

# Event kinds besides docs/rejects (see pipeline/events.py).
READ, ENTRY, REJECTED, PLAN, IDS, DROP, RENAME = "read", "entry", "rejected", "plan", "ids", "drop", "rename"
CHECKS = "checks"    # counts per decision of the data-quality checks (pipeline/checks.py)

# Input bytes per dedup hash partition: more partitions on bigger corpora keep
# the memory of one partition's work bounded (the output does not depend on it).
PARTITION_BYTES = 64 << 20


# --------------------------------------------------------------------------
# DoFns: thin wrappers around the pure functions of the other modules.
# --------------------------------------------------------------------------


class ReadSource(beam.DoFn):
    """File path / hf: spec → events: ``docs`` batches (at most ``batch_size``
    docs or ~``batch_bytes`` of text), ``rejects`` lists, and one ``read``
    count (records read from the file, for stats.json["read"])."""

    def __init__(self, read_cfg: dict, batch_size: int, batch_bytes: int = 8 << 20):
        self.read_cfg = read_cfg
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes

    def process(self, path: str) -> Iterator[tuple]:
        n = 0
        batch: list = []
        rejects: list = []
        size = 0
        for kind, payload in readers.read_source(path, self.read_cfg):
            n += 1
            if kind == "doc":
                batch.append(payload)
                size += len(payload[1])
                if len(batch) >= self.batch_size or size >= self.batch_bytes:
                    yield DOCS, batch
                    batch, size = [], 0
            else:
                rejects.append(payload)
                if len(rejects) >= self.batch_size:
                    yield REJECTS, rejects
                    rejects = []
        yield from events(batch, rejects)
        yield READ, n


def clean_and_filter(batch, clean, active_filters, exact: bool, snippet: int) -> tuple[list, list]:
    """Doc batch → (batch of (text key, cleaned doc), rejects): each document
    failing a filter is rejected, naming the first failing filter."""
    out, rejects = [], []
    texts = [clean(doc[1]) for doc in batch]
    for (doc_id, raw, source, line), text, reason in zip(batch, texts, filters.first_failures(texts, active_filters)):
        if reason is not None:
            rejects.append((reason, doc_id, source, line, raw[:snippet], None))
            continue
        key = dedup.exact_key(text) if exact else dedup.exact_key(f"{text}\x00{source}:{line}:{doc_id}")
        out.append((key, (doc_id, text, source, line)))
    return out, rejects


class CleanAndFilter(beam.DoFn):
    """Doc batch → events: a batch of (text key, cleaned doc) and the rejects,
    each naming the document's first failing filter."""

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def setup(self):
        self.clean = clean_mod.build_cleaner(self.cfg["clean"])
        self.filters = filters.build_filters(self.cfg["filters"])
        self.exact = self.cfg["dedup"].get("exact", True)
        self.snippet = self.cfg["output"].get("reject_text_chars", 300)
        self.progress = Progress("read, clean, filter")

    def process(self, batch) -> Iterator[tuple]:
        self.progress.update(len(batch), chars=sum(len(doc[1]) for doc in batch))
        yield from events(*clean_and_filter(batch, self.clean, self.filters, self.exact, self.snippet))

    def teardown(self):
        self.progress.close()


class RunChecks(beam.DoFn):
    """Keyed-doc batch → events: the kept batch (PII masked), the rejects of the language,
    word-list, PII, decontamination and quality checks, and their ``checks`` counts."""

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def setup(self):
        self.checks = checks_mod.Checks(build(PipelineConfig, self.cfg, "pipeline config"))
        self.progress = Progress("checks: language, word lists, PII, decontamination, quality")

    def teardown(self):
        self.progress.close()

    def process(self, batch) -> Iterator[tuple]:
        self.progress.update(len(batch), chars=sum(len(doc[1]) for _, doc in batch))
        kept, rejects, counts, _ = checks_mod.run_checks(batch, self.checks)
        yield from events(kept, rejects)
        if counts:
            yield CHECKS, counts


def assign_shards(event: tuple, plan: dict, valid_fraction: float) -> dict:
    """One event bound for the shards → {(split, shard, count): (kind, sub-list)}:
    documents by their (id, key) hash; near-duplicate drops and id renames
    follow the document they concern."""
    kind, items = event
    parts: dict = {}
    for item in items:
        split, index = shards.assign_split(item[1][0], item[0], plan, valid_fraction)
        parts.setdefault((split, index, plan["shards"][split]), []).append(item)
    return {shard: (kind, sub) for shard, sub in parts.items()}


class AssignShards(beam.DoFn):
    """Events ``docs`` (keyed-doc batches), ``drop`` ((key, (id, kept id)))
    and ``rename`` ((key, (id, new id))) → (shard, event) under the split plan."""

    def __init__(self, valid_fraction: float):
        self.valid_fraction = valid_fraction

    def process(self, event, plan) -> Iterator[tuple]:
        yield from assign_shards(event, plan, self.valid_fraction).items()


def shard_documents(grouped: Iterable[tuple], snippet: int) -> tuple[list, list]:
    """One shard's events → (documents (id, text, key, source[, fields]) to write,
    ``duplicate_near`` rejects): drops are applied, ids renamed."""
    docs, dropped, renamed = [], {}, {}
    for kind, items in grouped:
        if kind == DOCS:
            docs.extend(items)
        elif kind == DROP:
            dropped.update((key, kept) for key, (_, kept) in items)
        else:
            renamed.update((key, new) for key, (_, new) in items)
    out, rejects = [], []
    for key, doc in docs:
        doc_id, text, source, line = doc[:4]
        if key in dropped:
            rejects.append(("duplicate_near", doc_id, source, line, text[:snippet], dropped[key]))
        else:
            out.append((renamed.get(key, doc_id), text, key, source, *doc[4:]))   # + the checks' fields
    return out, rejects


class WriteShard(beam.DoFn):
    """((split, shard), events) → the shard file; events: its manifest
    ``entry`` and the near-duplicate ``rejects``."""

    def __init__(self, output: str, gzip_level: int = 6, parquet: bool = False, snippet: int = 300):
        self.output = output
        self.gzip_level = gzip_level
        self.parquet = parquet
        self.snippet = snippet

    def setup(self):
        self.progress = Progress("write shards", unit="shard")

    def process(self, item) -> Iterator[tuple]:
        (split, index, count), grouped = item
        docs, rejects = shard_documents(grouped, self.snippet)
        if rejects:
            yield REJECTS, rejects
        yield ENTRY, shards.write_shard(self.output, split, index, count, docs, self.gzip_level, self.parquet)
        self.progress.update(1, chars=sum(len(doc[1]) for doc in docs))

    def teardown(self):
        self.progress.close()


def _split_items(survivors: list) -> list:
    """Survivor items → [(key, id)]: what the split plan needs."""
    return [(key, doc_id) for key, doc_id, _, _ in survivors]


class SplitPlanFn(beam.CombineFn):
    """Counts documents and remembers the smallest split value → SplitPlan."""

    def __init__(self, output_cfg: dict):
        self.output_cfg = output_cfg

    def create_accumulator(self):
        return shards.SplitPlan.create_accumulator()

    def add_input(self, acc, items):
        return shards.SplitPlan.add_all(acc, items, self.output_cfg["valid_fraction"])

    def merge_accumulators(self, accs):
        return shards.SplitPlan.merge(accs)

    def extract_output(self, acc):
        return shards.SplitPlan.finish(acc, self.output_cfg)


def _census_items(survivors: list, partitions: int) -> Iterator[tuple[int, list]]:
    """Survivor items → (partition of the id, items): one id, one partition (CRC-32 of the id:
    stable across processes, unlike ``hash``, and a tenth of the cost of the text key's digest)."""
    parts: dict[int, list] = {}
    for item in survivors:
        parts.setdefault(zlib.crc32(item[1].encode("utf-8", "surrogatepass")) % partitions, []).append(item)
    yield from parts.items()


def _census_partition(item) -> Iterator[tuple]:
    """One id partition → ``rename`` events (key, (id, new id)) and its ``ids`` counts."""
    _, parts = item
    renames, counts = shards.id_census(i for part in parts for i in part)
    if renames:
        yield RENAME, [(key, (old, new)) for key, old, new in renames]
    yield IDS, counts


def _drop_events(dropped: list) -> tuple[str, list]:
    return DROP, [(key, (doc_id, kept)) for key, doc_id, kept in dropped]


def _by_reason(rejects: list) -> Iterator[tuple[str, list]]:
    parts: dict = {}
    for r in rejects:
        parts.setdefault(r[0], []).append(r)
    return iter(parts.items())


def _write_rejects(item, output, gzip_level):
    reason, lists = item
    return shards.write_rejects(output, reason, [r for rejects in lists for r in rejects], gzip_level)


def write_empty_shards(entries: list, plan: dict, output: str, gzip_level: int, parquet: bool) -> list:
    """Manifest entries of the planned shards that got no document, written
    now, so that every planned shard file exists."""
    written = {e["path"] for e in entries}
    return [
        shards.write_shard(output, split, index, plan["shards"][split], [], gzip_level, parquet)
        for split in shards.SPLITS
        for index in range(plan["shards"][split])
        if corpus.shard_path(split, index, plan["shards"][split]) not in written
    ]


def finalize(summary: Iterable[tuple], output: str, ocfg: dict, input_bytes: int, check_info: dict | None = None) -> dict:
    """The run's summary events → manifest.json and stats.json (written last)."""
    by_kind: dict[str, list] = {ENTRY: [], REJECTED: [], READ: [], PLAN: [], IDS: [], CHECKS: []}
    for kind, payload in summary:
        by_kind[kind].append(payload)
    plan = by_kind[PLAN][0] if by_kind[PLAN] else shards.SplitPlan.finish(shards.SplitPlan.create_accumulator(), ocfg)
    entries = by_kind[ENTRY] + write_empty_shards(by_kind[ENTRY], plan, output, ocfg["gzip_level"], ocfg["parquet"])
    stats = shards.build_stats(sum(by_kind[READ]), dict(by_kind[REJECTED]), entries, input_bytes)
    stats["shards"] = plan["shards"]
    stats["duplicate_ids"] = shards.merge_id_counts(by_kind[IDS])
    counts: dict = {}
    for c in by_kind[CHECKS]:
        counts = checks_mod.merge_counts(counts, c)
    stats.update(checks_mod.stats_section(counts, check_info))
    corpus.write_manifest(output, entries, stats)
    return stats


def _finalize(item, output: str, ocfg: dict, input_bytes: int, check_info: dict) -> Iterator[dict]:
    _, summary = item
    yield finalize(summary, output, ocfg, input_bytes, check_info)


# --------------------------------------------------------------------------
# Composite transforms.  Every step emits one PCollection of events; named
# Selects pick what the next step needs; every branch ends in the one sink,
# "Write/Finalize", as a main input (see tests/test_pipeline_graph.py).
# --------------------------------------------------------------------------


class Deduplicate(beam.PTransform):
    """Keyed-doc batches → {"docs": batches without exact duplicates,
    "survivors": survivor lists, "drop": drop events, "rejects": exact-duplicate
    rejects}.  Near duplicates are not removed from the batches here: their
    ``drop`` events travel to the shard of the document they concern, where
    the writer applies them (no per-document map on one worker)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg

    def expand(self, docs):
        dcfg = self.cfg["dedup"]
        snippet = self.cfg["output"]["reject_text_chars"]
        partitions, batch_size = self.cfg["beam"]["partitions"], self.cfg["beam"]["batch_size"]
        rejects = []
        if dcfg.get("exact", True):
            docs = step(docs, "Exact", dedup.ExactDedup(snippet, partitions, batch_size), rejects)
        if dcfg.get("near", True):
            candidates = docs | "Near" >> dedup.NearDuplicates(dcfg, partitions)
        else:
            candidates = docs.pipeline | "NoNearDedup" >> beam.Create([])
        joined = {"docs": docs, "candidates": candidates} | "Survivors" >> dedup.Survivors(partitions)
        return {
            "docs": docs,
            "survivors": joined | "SurvivorItems" >> Select(dedup.SURVIVORS),
            "drop": joined | "Dropped" >> Select(dedup.DROPPED) | "DropEvents" >> beam.Map(_drop_events),
            "rejects": rejects,
        }



class WriteOutput(beam.PTransform):
    """{docs, survivors, drop, read, rejects (reject lists of the steps
    before)} → shards, rejects/, manifest.json,
    stats.json.  The split plan (one small dict) is the only side input; the
    last step, Finalize, gathers the small summary events (manifest entries,
    reject counts, read counts, plan, id counts) on one key and writes the
    manifest and stats."""

    def __init__(self, output: str, cfg: dict, input_bytes: int):
        super().__init__()
        self.output = output
        self.cfg = cfg
        self.input_bytes = input_bytes

    def expand(self, pcolls):
        ocfg, partitions = self.cfg["output"], self.cfg["beam"]["partitions"]
        plan = (
            pcolls["survivors"]
            | "SplitItems" >> beam.Map(_split_items)
            | "SplitPlan" >> beam.CombineGlobally(SplitPlanFn(ocfg))
        )
        census = (
            pcolls["survivors"]
            | "ByIdPartition" >> beam.FlatMap(_census_items, partitions)
            | "GroupIds" >> beam.GroupByKey()
            | "IdCensus" >> beam.FlatMap(_census_partition)
        )
        written = (
            [pcolls["docs"] | "TagDocs" >> Tag(DOCS), pcolls["drop"], census | "Renames" >> Keep(RENAME)]
            | "BoundForShards" >> beam.Flatten()
            | "AssignShards" >> beam.ParDo(AssignShards(ocfg["valid_fraction"]), beam.pvalue.AsSingleton(plan))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteShard(self.output, ocfg["gzip_level"], ocfg["parquet"], ocfg["reject_text_chars"]))
        )
        reject_counts = (
            [pcolls["rejects"], written | "NearRejects" >> Select(REJECTS)]
            | "AllRejects" >> beam.Flatten()
            | "ByReason" >> beam.FlatMap(_by_reason)
            | "GroupByReason" >> beam.GroupByKey()
            | "WriteRejects" >> beam.Map(_write_rejects, self.output, ocfg["gzip_level"])
        )
        summary = [
            written | "Entries" >> Keep(ENTRY),
            reject_counts | "TagRejected" >> Tag(REJECTED),
            pcolls["read"],
            plan | "TagPlan" >> Tag(PLAN),
            census | "IdCounts" >> Keep(IDS),
            *([pcolls["checks"]] if "checks" in pcolls else []),
        ]
        return (
            summary
            | "Summary" >> beam.Flatten()
            | "OneKey" >> beam.Map(lambda event: (None, event))
            | "Gather" >> beam.GroupByKey()
            | "Finalize" >> beam.FlatMap(_finalize, self.output, ocfg, self.input_bytes,
                                         checks_mod.describe(build(PipelineConfig, self.cfg, "pipeline config")))
        )


def build_pipeline(p: beam.Pipeline, paths: Sequence[str], output: str, cfg: dict, input_bytes: int = 0):
    """The whole corpus pipeline on ``p``; returns the PCollection of the stats dict.

    Steps that keep or reject documents follow the pattern in pipeline/events.py:
    ``docs = step(docs, "Name", SomeDoFn(cfg), rejects)``."""
    cfg = as_dict(cfg)     # a PipelineConfig or its mapping
    rejects: list = []
    read = p | "Read" >> ReadEach(paths, ReadSource(cfg["read"], cfg["beam"]["batch_size"]))
    rejects.append(read | "ReadRejects" >> Select(REJECTS))
    docs = read | "ReadDocs" >> Select(DOCS)
    docs = step(docs, "Clean", CleanAndFilter(cfg), rejects)
    checked = docs | "Checks" >> beam.ParDo(RunChecks(cfg))
    rejects.append(checked | "ChecksRejects" >> Select(REJECTS))
    docs = checked | "ChecksDocs" >> Select(DOCS)
    deduped = docs | "Dedup" >> Deduplicate(cfg)
    rejects += deduped.pop("rejects")
    return (
        {**deduped, "read": read | "ReadCounts" >> Keep(READ), "rejects": rejects | "Rejects" >> beam.Flatten(),
         "checks": checked | "ChecksCounts" >> Keep(CHECKS)}
        | "Write" >> WriteOutput(output, cfg, input_bytes)
    )


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    """Files of the input specs (see ``pipeline.corpus.expand_inputs``)."""
    return corpus.expand_inputs(inputs)


def dedup_partitions(cfg: dict, input_bytes: int) -> int:
    """Hash partitions of the dedup shuffles: the configured number, more on
    big inputs (one per ``PARTITION_BYTES``) so a partition stays small."""
    return max(int(cfg["beam"]["partitions"]), math.ceil(input_bytes / PARTITION_BYTES))


def pipeline_options(runner: str = "DirectRunner", workers: int = 1, extra_beam_args: Sequence[str] = (),
                     batched: bool = False) -> PipelineOptions:
    """Beam options for a runner name or alias.  The DirectRunner with one worker runs in memory:
    on Beam's FnApiRunner, or with ``batched=True`` (pipelines whose elements are whole batches
    of documents: the corpus pipeline) on its bundle-based DirectRunner, which hands those
    batches from step to step as Python objects instead of encoding them at every stage and
    shuffle.  Measured on the corpus pipeline with every check on, same output bytes
    (BENCHMARKS.md, "Pipeline speed with every data-quality step on"): 1.02x against 1.24x the
    plain loop's time on 40 MB, 112 vs 142 s and 2.8 vs 4.7 GB peak memory on 160 MB; the pairs
    and vocabulary pipelines (an element per document or per word) were 2-3x slower there, so
    they and the token stage stay on the FnApiRunner.  ``--direct_running_mode=...`` picks the FnApiRunner's mode
    explicitly; ``workers`` > 1 runs its multi_processing mode."""
    runner = RUNNER_ALIASES.get(runner.lower(), runner) if runner else "DirectRunner"
    explicit = any(a.startswith("--direct_running_mode") for a in extra_beam_args)
    if runner == "DirectRunner" and batched and not explicit and not (workers and workers > 1):
        runner = IN_MEMORY
    args = [f"--runner={runner}", *extra_beam_args]
    if runner == "DirectRunner" and not explicit:
        if workers and workers > 1:
            args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
        else:
            args += ["--direct_running_mode=in_memory"]
    return PipelineOptions(args)


def run_pipeline(
    inputs: list[str] | str,
    output: str,
    config_path: str | None = None,
    runner: str = "DirectRunner",
    workers: int = 1,
    extra_beam_args: Sequence[str] = (),
    overrides: dict | None = None,
) -> dict:
    """Run the pipeline to completion and return the stats dict (stats.json
    plus ``elapsed_s``, ``docs_per_s``, ``mb_per_s``).  ``overrides`` is a
    nested dict over the config, e.g. ``{"output": {"num_shards": 4}}``."""
    if isinstance(inputs, str):
        inputs = [inputs]
    pcfg = load_config(config_path, overrides)        # validated
    checks_mod.preflight(pcfg)
    cfg = as_dict(pcfg)                                 # the graph takes plain mappings
    paths = expand_inputs(inputs)
    output = corpus.absolute(output.rstrip("/") or output)
    corpus.check_output_apart(output, inputs, paths)
    layouts = [layout for _, layout in readers.plan_inputs(paths, cfg["read"])]
    input_bytes = corpus.input_bytes(paths)
    cfg["beam"]["partitions"] = dedup_partitions(cfg, input_bytes)
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)
    corpus.clear_outputs(output)
    start = time.perf_counter()
    options = pipeline_options(runner, workers, extra_beam_args, batched=True)
    with corpus.scratch_tmpdir():
        if options.view_as(StandardOptions).runner == IN_MEMORY:
            # In process, no services to start or stop: run without the round trip of the graph
            # through its proto form that Beam makes first for this runner, as a check (0.4 s a
            # run; the portable and Dask runners go through that form for real, and are tested).
            p = beam.Pipeline(options=options)
            build_pipeline(p, paths, output, cfg, input_bytes)
            p.run(test_runner_api=False).wait_until_finish()
        else:
            with beam.Pipeline(options=options) as p:
                build_pipeline(p, paths, output, cfg, input_bytes)
    elapsed = time.perf_counter() - start
    stats = corpus.read_json(corpus.join(output, corpus.STATS)) or {}
    stats["elapsed_s"] = round(elapsed, 3)
    stats["docs_per_s"] = round(stats.get("read", 0) / elapsed, 1) if elapsed else 0.0
    stats["mb_per_s"] = round(input_bytes / 1e6 / elapsed, 3) if elapsed else 0.0
    log_report(stats, output)
    empty = hints.zero_output_message(stats, layouts)
    if empty:
        raise readers.InputError(empty)
    many = hints.high_reject_message(stats, layouts, cfg["read"]["warn_reject_share"])
    if many:
        print(f"warning: {many}", file=sys.stderr, flush=True)
    return stats


def log_report(stats: dict, output: str) -> None:
    lines = [
        f"pipeline: {output}: read {stats.get('read', 0)} records "
        f"({stats.get('input_bytes', 0) / 1e6:.2f} MB) in {stats.get('elapsed_s', 0):.2f}s: "
        f"{stats.get('docs_per_s', 0):.0f} docs/s, {stats.get('mb_per_s', 0):.2f} MB/s",
        f"  written {stats.get('written', 0)} (train {stats.get('written_by_split', {}).get('train', 0)}, "
        f"valid {stats.get('written_by_split', {}).get('valid', 0)}), "
        f"duplicates exact {stats.get('duplicates_exact', 0)}, near {stats.get('duplicates_near', 0)}",
    ]
    for reason, count in sorted(stats.get("rejected", {}).items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  rejected {reason}: {count}")
    masked = {k: v for k, v in stats.get("pii", {}).items() if k != "documents"}
    if masked:
        lines.append(f"  PII in {stats['pii'].get('documents', 0)} documents: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(masked.items())))
    missing = [name for name, state in stats.get("decontamination_sets", {}).items() if state == "missing"]
    if missing:
        lines.append(f"  decontamination: eval sets not found (set ZH_SHARED_DATA): {', '.join(missing)}")
    if not stats.get("accounted", False):
        lines.append("  WARNING: read != written + rejected + duplicates")
    print("\n".join(lines), file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Beam corpus pipeline: read, clean, filter, check (language, word lists, PII, "
        "decontamination, quality), dedup, shard.",
        epilog="Any other flag is a Beam pipeline option and passes through to PipelineOptions, e.g. "
        "--flink_master=HOST:8081, --project=P --region=R --temp_location=gs://..., --extra_package=dist/x.whl. "
        "See the docstring of pipeline/run.py for complete Flink/Spark/Dataflow command lines.",
    )
    parser.add_argument("--input", action="append", required=True,
                        help="glob, file, directory or hf:NAME[:CONFIG][:SPLIT]; may repeat")
    parser.add_argument("--output", required=True, help="output folder (any Beam filesystem)")
    parser.add_argument("--config", default=None, help="YAML config (default: built-in defaults = configs/pipeline.yaml)")
    parser.add_argument("--runner", default="DirectRunner",
                        help="direct|portable|dask|flink|spark|dataflow (or a Beam runner class name)")
    parser.add_argument("--workers", type=int, default=1, help="DirectRunner processes (>1: multi_processing)")
    parser.add_argument("--num-shards", type=int, default=None, help="train shards (default: <=100k docs per shard)")
    parser.add_argument("--valid-fraction", type=float, default=None, help="validation fraction (default 0.02)")
    parser.add_argument("--text-field", default=None,
                        help="text field/column or a path into nested records (data.paragraphs.context, "
                             "0 = first column); 'a,b' = first present (default: detected per file)")
    parser.add_argument("--id-field", default=None, help="id field/column")
    parser.add_argument("--format", default=None, help="auto|jsonl|json|text|csv|tsv|xml|parquet (default: detected per file)")
    parser.add_argument("--encoding", default=None, help="input encoding, e.g. gb18030, big5, utf-16 (default: detected per file)")
    parser.add_argument("--text-unit", default=None, choices=["line", "block"], help="plain text: document per line or per blank-line block")
    parser.add_argument("--parquet", action="store_true", help="also write Parquet shards")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set filters.min_chars=2 (may repeat; "
                             "an unknown key is an error)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_known_args(argv)


def overrides_from_args(args: argparse.Namespace) -> dict:
    """``--set`` pairs, then the named flags over them."""
    over: dict = parse_overrides(args.set, "--set")
    for name in ("read", "output"):
        if not isinstance(over.setdefault(name, {}), dict):
            raise ConfigError(f"--set: '{name}' is a config section, set one of its keys ({name}.KEY=VALUE)")
    if args.text_field is not None:
        over["read"]["text_field"] = args.text_field
    if args.id_field is not None:
        over["read"]["id_field"] = args.id_field
    if args.format is not None:
        over["read"]["format"] = args.format
    if args.encoding is not None:
        over["read"]["encoding"] = args.encoding
    if args.text_unit is not None:
        over["read"]["text_unit"] = args.text_unit
    if args.num_shards is not None:
        over["output"]["num_shards"] = args.num_shards
    if args.valid_fraction is not None:
        over["output"]["valid_fraction"] = args.valid_fraction
    if args.parquet:
        over["output"]["parquet"] = True
    return over


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger(readers.log.name).setLevel(logging.INFO)  # how each file is read
    logging.getLogger(progress_log.name).setLevel(logging.INFO)  # long steps: a bar, or a line every 30 s
    try:
        stats = run_pipeline(
            args.input,
            args.output,
            config_path=args.config,
            runner=args.runner,
            workers=args.workers,
            extra_beam_args=beam_args,
            overrides=overrides_from_args(args),
        )
    except (FileNotFoundError, corpus.CorpusError) as exc:   # no input matched, unsafe output: one line
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except readers.InputError as exc:  # undecidable layout, or nothing written: one line with a hint
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:         # a bad --config file or key: one line naming file and key
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if stats.get("accounted") else 1
