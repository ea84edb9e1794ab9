"""The corpus pipeline: read → clean → filter → dedup → split → shard.

    python -m pipeline --input 'data/sample/*.jsonl' --output data/clean \\
        [--config configs/pipeline.yaml] [--runner DirectRunner] [--workers N] \\
        [--num-shards N] [--valid-fraction F] [--text-field text] [--id-field id] \\
        [any Beam pipeline flag, passed through to PipelineOptions]

``--input`` may repeat and takes globs, files, directories (recursive) and
``hf:NAME[:CONFIG][:SPLIT]``.  In Python: ``run_pipeline(inputs, output)``.

Output (OUT = --output)::

    OUT/train/shard-00000-of-0000N.jsonl.gz   {"id", "text"} per line, sorted by id
    OUT/valid/shard-00000-of-0000M.jsonl.gz
    OUT/manifest.json   {"shards": [{"path", "split", "documents", "characters", "sha256"}]}
    OUT/stats.json      read == written + sum(rejected) + duplicates_exact + duplicates_near
    OUT/rejects/<reason>.jsonl.gz   {"id", "reason", "source", "line", "text"[, "kept_id"]}

Everything from reading to writing the shards, rejects, manifest and stats
runs as Beam transforms; files are read and written through Beam's
FileSystems; DoFns are pickle-safe and keep no process-global state; the
global decisions (exact-duplicate groups, LSH buckets, clusters, split plan)
are GroupByKey / CoGroupByKey / CombineGlobally + side inputs.  So the same
pipeline runs on every runner:

DirectRunner, in memory (default; also ``make data``)::

    python -m pipeline --input ... --output OUT

DirectRunner, N processes (``make data WORKERS=N``; identical output)::

    python -m pipeline --input ... --output OUT --workers N
    # = --direct_running_mode=multi_processing --direct_num_workers=N

Each worker process costs a fixed 1-2 s that does not shrink with the corpus
(it imports Beam and the pipeline; Beam shuts the workers down one after the
other), and the runner process itself needs CPU to move data between stages,
so on 2 cores the speed-up of 2 workers grows with the corpus size
(bench/pipeline_bench.py reports it with and without the fixed cost).

Workers outside this machine need the ``pipeline`` package: build a wheel
once, ``pip wheel --no-deps . -w dist``, and ship it with
``--extra_package dist/zh_pretrain-0.1.0-py3-none-any.whl``.

Flink (``make data RUNNER=flink RUNNER_ARGS='...'``)::

    python -m pipeline --input gs://bucket/raw/*.jsonl.gz --output gs://bucket/clean \\
        --runner FlinkRunner --flink_master=HOST:8081 --parallelism=16 \\
        --environment_type=DOCKER --sdk_container_image=apache/beam_python3.11_sdk:2.77.0 \\
        --extra_package dist/zh_pretrain-0.1.0-py3-none-any.whl
    # local smoke test of the Flink path: --flink_master=[local] --environment_type=LOOPBACK

Spark (``make data RUNNER=spark``)::

    python -m pipeline --input ... --output ... --runner SparkRunner \\
        --spark_master_url=spark://HOST:7077 --environment_type=DOCKER \\
        --sdk_container_image=apache/beam_python3.11_sdk:2.77.0 \\
        --extra_package dist/zh_pretrain-0.1.0-py3-none-any.whl
    # or --spark_submit_uber_jar --spark_rest_url=http://HOST:6066 for a cluster REST endpoint

Dataflow (``make data RUNNER=dataflow``)::

    python -m pipeline --input gs://bucket/raw/*.jsonl.gz --output gs://bucket/clean \\
        --runner DataflowRunner --project=PROJECT --region=REGION \\
        --temp_location=gs://bucket/tmp --staging_location=gs://bucket/staging \\
        --extra_package dist/zh_pretrain-0.1.0-py3-none-any.whl \\
        --max_num_workers=32 --experiments=use_runner_v2

Inputs and output must then be on a filesystem every worker can reach
(gs://, s3:// with ``apache-beam[aws]``, hdfs:// with ``--hdfs_host`` ...).
The runner is always named explicitly (DirectRunner by default): Beam 2.77
otherwise picks the Prism runner, which it downloads first.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import clean as clean_mod
from pipeline import dedup, filters, readers, shards
from pipeline.config import load_config

log = logging.getLogger("pipeline")

RUNNER_ALIASES = {
    "direct": "DirectRunner",
    "flink": "FlinkRunner",
    "spark": "SparkRunner",
    "dataflow": "DataflowRunner",
    "prism": "PrismRunner",
}


# --------------------------------------------------------------------------
# DoFns: thin wrappers around the pure functions of the other modules.
# --------------------------------------------------------------------------


class ReadSource(beam.DoFn):
    """File path / hf: spec → batches of documents (lists of at most
    ``batch_size`` docs or ~``batch_bytes`` of text), plus ``rejects`` and
    ``counts`` (records read per file, for stats.json["read"])."""

    def __init__(self, read_cfg: dict, batch_size: int, batch_bytes: int = 8 << 20):
        self.read_cfg = read_cfg
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes

    def process(self, path: str) -> Iterator[Any]:
        n = 0
        batch: list = []
        size = 0
        for kind, payload in readers.read_source(path, self.read_cfg):
            n += 1
            if kind == "doc":
                batch.append(payload)
                size += len(payload[1])
                if len(batch) >= self.batch_size or size >= self.batch_bytes:
                    yield batch
                    batch, size = [], 0
            else:
                yield beam.pvalue.TaggedOutput("rejects", payload)
        if batch:
            yield batch
        yield beam.pvalue.TaggedOutput("counts", n)


class CleanAndFilter(beam.DoFn):
    """Doc batch → batch of (text key, cleaned doc); each document failing a
    filter becomes a ``rejects`` record naming the first failing filter."""

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def setup(self):
        self.clean = clean_mod.build_cleaner(self.cfg["clean"])
        self.filters = filters.build_filters(self.cfg["filters"])
        self.exact = self.cfg["dedup"].get("exact", True)
        self.snippet = self.cfg["output"].get("reject_text_chars", 300)

    def process(self, batch) -> Iterator[Any]:
        out = []
        for doc_id, raw, source, line in batch:
            text = self.clean(raw)
            reason = filters.first_failure(text, self.filters)
            if reason is not None:
                yield beam.pvalue.TaggedOutput("rejects", (reason, doc_id, source, line, raw[: self.snippet], None))
                continue
            key = dedup.exact_key(text) if self.exact else dedup.exact_key(f"{text}\x00{source}:{line}:{doc_id}")
            out.append((key, (doc_id, text, source, line)))
        if out:
            yield out


class DropNearDuplicates(beam.DoFn):
    """Keyed-doc batch → kept batch; each dropped document becomes a
    ``duplicate_near`` reject naming the kept id."""

    def __init__(self, snippet_chars: int):
        self.snippet = snippet_chars

    def process(self, batch, dropped) -> Iterator[Any]:
        out = []
        for key, doc in batch:
            kept = dropped.get(key)
            if kept is None:
                out.append((key, doc))
            else:
                yield beam.pvalue.TaggedOutput(
                    "rejects", ("duplicate_near", doc[0], doc[2], doc[3], doc[1][: self.snippet], kept)
                )
        if out:
            yield out


class SplitPlanFn(beam.CombineFn):
    """Counts documents and remembers the smallest split value → SplitPlan."""

    def __init__(self, output_cfg: dict):
        self.output_cfg = output_cfg

    def create_accumulator(self):
        return shards.SplitPlan.create_accumulator()

    def add_input(self, acc, batch):
        fraction = self.output_cfg["valid_fraction"]
        for key, doc in batch:
            acc = shards.SplitPlan.add(acc, (shards.doc_hash(doc[0], key)[0], key), fraction)
        return acc

    def merge_accumulators(self, accs):
        return shards.SplitPlan.merge(accs)

    def extract_output(self, acc):
        return shards.SplitPlan.finish(acc, self.output_cfg)


def _assign_shards(batch, plan, valid_fraction):
    """Keyed-doc batch → ((split, shard), [(id, text, key)]) sub-batches."""
    parts: dict = {}
    for key, doc in batch:
        parts.setdefault(shards.assign_split(doc[0], key, plan, valid_fraction), []).append((doc[0], doc[1], key))
    return parts.items()


def _all_shard_keys(_, plan):
    """One empty placeholder per shard, so every planned shard file exists."""
    for split in shards.SPLITS:
        for index in range(plan["shards"][split]):
            yield ((split, index), None)


class WriteShard(beam.DoFn):
    """((split, shard), doc batches) → the shard file; yields its manifest entry."""

    def __init__(self, output: str, gzip_level: int = 6, parquet: bool = False):
        self.output = output
        self.gzip_level = gzip_level
        self.parquet = parquet

    def process(self, item, plan):
        (split, index), batches = item
        docs = [d for batch in batches if batch is not None for d in batch]
        yield shards.write_shard(self.output, split, index, plan["shards"][split], docs, self.gzip_level, self.parquet)


def _write_rejects(item, output, gzip_level):
    reason, rejects = item
    return shards.write_rejects(output, reason, rejects, gzip_level)


def _finalize(_, output, entries, reject_counts, read_counts, input_bytes, plan):
    entries = sorted(entries, key=lambda e: e["path"])
    stats = shards.build_stats(sum(read_counts), dict(reject_counts), entries, input_bytes)
    stats["shards"] = plan["shards"]
    shards.write_json(output, "manifest.json", {"shards": entries})
    shards.write_json(output, "stats.json", stats)
    yield stats


# --------------------------------------------------------------------------
# Composite transforms
# --------------------------------------------------------------------------


class ReadCorpus(beam.PTransform):
    """Matched file paths → docs; tagged ``rejects`` and ``counts``."""

    def __init__(self, paths: Sequence[str], cfg: dict):
        super().__init__()
        self.paths = list(paths)
        self.cfg = cfg

    def expand(self, pbegin):
        return (
            pbegin
            | "Paths" >> beam.Create(self.paths)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadSource"
            >> beam.ParDo(ReadSource(self.cfg["read"], self.cfg["beam"]["batch_size"])).with_outputs(
                "rejects", "counts", main="docs"
            )
        )


class CleanFilter(beam.PTransform):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg

    def expand(self, docs):
        return docs | "CleanAndFilter" >> beam.ParDo(CleanAndFilter(self.cfg)).with_outputs("rejects", main="docs")


class Deduplicate(beam.PTransform):
    """Exact then near-duplicate removal; returns (docs, [reject PCollections])."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg

    def expand(self, keyed):
        dcfg = self.cfg["dedup"]
        snippet = self.cfg["output"]["reject_text_chars"]
        partitions, batch_size = self.cfg["beam"]["partitions"], self.cfg["beam"]["batch_size"]
        rejects = []
        if dcfg.get("exact", True):
            exact = keyed | "Exact" >> dedup.ExactDedup(snippet, partitions, batch_size)
            keyed = exact.docs
            rejects.append(exact.rejects)
        if dcfg.get("near", True):
            clusters = keyed | "Near" >> dedup.NearDuplicateClusters(dcfg, partitions)
            near = keyed | "DropNear" >> beam.ParDo(
                DropNearDuplicates(snippet), dropped=beam.pvalue.AsDict(clusters)
            ).with_outputs("rejects", main="docs")
            keyed = near.docs
            rejects.append(near.rejects)
        return keyed, rejects


class WriteOutput(beam.PTransform):
    """Kept docs + rejects + read counts → shards, rejects/, manifest, stats."""

    def __init__(self, output: str, cfg: dict, input_bytes: int):
        super().__init__()
        self.output = output
        self.cfg = cfg
        self.input_bytes = input_bytes

    def expand(self, pcolls):
        docs, rejects, counts = pcolls["docs"], pcolls["rejects"], pcolls["counts"]
        ocfg = self.cfg["output"]
        p = docs.pipeline
        plan = beam.pvalue.AsSingleton(docs | "SplitPlan" >> beam.CombineGlobally(SplitPlanFn(ocfg)))
        assigned = docs | "AssignShards" >> beam.FlatMap(_assign_shards, plan, ocfg["valid_fraction"])
        placeholders = p | "One" >> beam.Create([None]) | "PlannedShards" >> beam.FlatMap(_all_shard_keys, plan)
        entries = (
            (assigned, placeholders)
            | "WithPlaceholders" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard"
            >> beam.ParDo(WriteShard(self.output, gzip_level=ocfg["gzip_level"], parquet=ocfg["parquet"]), plan)
        )
        reject_counts = (
            rejects
            | "ByReason" >> beam.Map(lambda r: (r[0], r))
            | "GroupByReason" >> beam.GroupByKey()
            | "WriteRejects" >> beam.Map(_write_rejects, self.output, ocfg["gzip_level"])
        )
        return (
            p
            | "Finalize" >> beam.Create([None])
            | "WriteManifestAndStats"
            >> beam.FlatMap(
                _finalize,
                self.output,
                beam.pvalue.AsList(entries),
                beam.pvalue.AsList(reject_counts),
                beam.pvalue.AsList(counts),
                self.input_bytes,
                plan,
            )
        )


def build_pipeline(p: beam.Pipeline, paths: Sequence[str], output: str, cfg: dict, input_bytes: int = 0):
    """The whole corpus pipeline on ``p``; returns the PCollection of the stats dict."""
    read = p | "Read" >> ReadCorpus(paths, cfg)
    cleaned = read.docs | "Clean" >> CleanFilter(cfg)
    kept, dedup_rejects = cleaned.docs | "Dedup" >> Deduplicate(cfg)
    rejects = [read.rejects, cleaned.rejects, *dedup_rejects] | "AllRejects" >> beam.Flatten()
    return {"docs": kept, "rejects": rejects, "counts": read.counts} | "Write" >> WriteOutput(output, cfg, input_bytes)


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    paths: list[str] = []
    for spec in inputs:
        matched = readers.expand_input(spec)
        if not matched:
            raise FileNotFoundError(f"no input matched {spec!r}")
        paths.extend(matched)
    return sorted(set(paths))


def _input_size(paths: Sequence[str]) -> int:
    files = [p for p in paths if not readers.is_hf_spec(p)]
    if not files:
        return 0
    return sum(m.size_in_bytes for r in FileSystems.match(files) for m in r.metadata_list)


def _clear_output(output: str) -> None:
    """Remove a previous run's files, so no stale shard survives a re-run."""
    patterns = [shards.join_path(output, d) + "/**" for d in ("train", "valid", "rejects")]
    patterns += [shards.join_path(output, f) for f in ("manifest.json", "stats.json")]
    stale = []
    for result in FileSystems.match(patterns):
        stale.extend(m.path for m in result.metadata_list)
    if stale:
        FileSystems.delete(stale)


def pipeline_options(runner: str = "DirectRunner", workers: int = 1, extra_beam_args: Sequence[str] = ()) -> PipelineOptions:
    runner = RUNNER_ALIASES.get(runner.lower(), runner) if runner else "DirectRunner"
    args = [f"--runner={runner}", *extra_beam_args]
    if runner == "DirectRunner" and not any(a.startswith("--direct_running_mode") for a in extra_beam_args):
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
    cfg = load_config(config_path, overrides)
    paths = expand_inputs(inputs)
    input_bytes = _input_size(paths)
    output = output.rstrip("/") or output
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)
    _clear_output(output)
    start = time.perf_counter()
    with beam.Pipeline(options=pipeline_options(runner, workers, extra_beam_args)) as p:
        build_pipeline(p, paths, output, cfg, input_bytes)
    elapsed = time.perf_counter() - start
    stats = shards.read_json(shards.join_path(output, "stats.json")) or {}
    stats["elapsed_s"] = round(elapsed, 3)
    stats["docs_per_s"] = round(stats.get("read", 0) / elapsed, 1) if elapsed else 0.0
    stats["mb_per_s"] = round(input_bytes / 1e6 / elapsed, 3) if elapsed else 0.0
    log_report(stats, output)
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
    if not stats.get("accounted", False):
        lines.append("  WARNING: read != written + rejected + duplicates")
    print("\n".join(lines), file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Beam corpus pipeline: read, clean, filter, dedup, shard.",
        epilog="Any other flag is a Beam pipeline option and passes through to PipelineOptions, e.g. "
        "--flink_master=HOST:8081, --project=P --region=R --temp_location=gs://..., --extra_package=dist/x.whl. "
        "See the docstring of pipeline/run.py for complete Flink/Spark/Dataflow command lines.",
    )
    parser.add_argument("--input", action="append", required=True,
                        help="glob, file, directory or hf:NAME[:CONFIG][:SPLIT]; may repeat")
    parser.add_argument("--output", required=True, help="output folder (any Beam filesystem)")
    parser.add_argument("--config", default=None, help="YAML config (default: built-in defaults = configs/pipeline.yaml)")
    parser.add_argument("--runner", default="DirectRunner", help="DirectRunner|FlinkRunner|SparkRunner|DataflowRunner (or direct|flink|spark|dataflow)")
    parser.add_argument("--workers", type=int, default=1, help="DirectRunner processes (>1: multi_processing)")
    parser.add_argument("--num-shards", type=int, default=None, help="train shards (default: <=100k docs per shard)")
    parser.add_argument("--valid-fraction", type=float, default=None, help="validation fraction (default 0.02)")
    parser.add_argument("--text-field", default=None, help="text field/column; 'a,b' = first present")
    parser.add_argument("--id-field", default=None, help="id field/column")
    parser.add_argument("--format", default=None, help="auto|jsonl|json|text|csv|tsv|parquet")
    parser.add_argument("--text-unit", default=None, choices=["line", "block"], help="plain text: document per line or per blank-line block")
    parser.add_argument("--parquet", action="store_true", help="also write Parquet shards")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_known_args(argv)


def overrides_from_args(args: argparse.Namespace) -> dict:
    over: dict = {"read": {}, "output": {}}
    if args.text_field is not None:
        over["read"]["text_field"] = args.text_field
    if args.id_field is not None:
        over["read"]["id_field"] = args.id_field
    if args.format is not None:
        over["read"]["format"] = args.format
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
    stats = run_pipeline(
        args.input,
        args.output,
        config_path=args.config,
        runner=args.runner,
        workers=args.workers,
        extra_beam_args=beam_args,
        overrides=overrides_from_args(args),
    )
    return 0 if stats.get("accounted") else 1
