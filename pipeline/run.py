"""The corpus pipeline: read → clean → filter → checks (language, word lists, PII,
decontamination, quality score) → dedup → split → shard.

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

from pipeline import checks as checks_mod
from pipeline import clean as clean_mod
from pipeline import dedup, filters, readers, shards
from pipeline.config import ConfigError, as_dict, load_config

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
    ``batch_size`` docs or ~``batch_bytes`` of text), plus ``rejects`` (lists)
    and ``counts`` (records read per file, for stats.json["read"])."""

    def __init__(self, read_cfg: dict, batch_size: int, batch_bytes: int = 8 << 20):
        self.read_cfg = read_cfg
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes

    def process(self, path: str) -> Iterator[Any]:
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
                    yield batch
                    batch, size = [], 0
            else:
                rejects.append(payload)
                if len(rejects) >= self.batch_size:
                    yield beam.pvalue.TaggedOutput("rejects", rejects)
                    rejects = []
        if batch:
            yield batch
        if rejects:
            yield beam.pvalue.TaggedOutput("rejects", rejects)
        yield beam.pvalue.TaggedOutput("counts", n)


def clean_and_filter(batch, clean, active_filters, exact: bool, snippet: int) -> tuple[list, list]:
    """Doc batch → (batch of (text key, cleaned doc), rejects): each document
    failing a filter is rejected, naming the first failing filter."""
    out, rejects = [], []
    for doc_id, raw, source, line in batch:
        text = clean(raw)
        reason = filters.first_failure(text, active_filters)
        if reason is not None:
            rejects.append((reason, doc_id, source, line, raw[:snippet], None))
            continue
        key = dedup.exact_key(text) if exact else dedup.exact_key(f"{text}\x00{source}:{line}:{doc_id}")
        out.append((key, (doc_id, text, source, line)))
    return out, rejects


class CleanAndFilter(beam.DoFn):
    """Doc batch → batch of (text key, cleaned doc), plus ``rejects`` (one list
    per batch) naming each rejected document's first failing filter."""

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def setup(self):
        self.clean = clean_mod.build_cleaner(self.cfg.clean)
        self.filters = filters.build_filters(self.cfg.filters)
        self.exact = self.cfg.dedup.exact
        self.snippet = self.cfg.output.reject_text_chars

    def process(self, batch) -> Iterator[Any]:
        out, rejects = clean_and_filter(batch, self.clean, self.filters, self.exact, self.snippet)
        if rejects:
            yield beam.pvalue.TaggedOutput("rejects", rejects)
        if out:
            yield out


class RunChecks(beam.DoFn):
    """Keyed-doc batch → kept batch (PII masked, record fields attached), plus ``rejects``
    and ``checks`` (counts per decision): ``pipeline.checks``."""

    def __init__(self, cfg):
        self.cfg = cfg

    def setup(self):
        self.checks = checks_mod.Checks(self.cfg)

    def process(self, batch) -> Iterator[Any]:
        kept, rejects, counts = checks_mod.run_checks(batch, self.checks)
        if rejects:
            yield beam.pvalue.TaggedOutput("rejects", rejects)
        if counts:
            yield beam.pvalue.TaggedOutput("checks", counts)
        if kept:
            yield kept


class MergeCounts(beam.CombineFn):
    """Per-batch check counts → one nested dict (``checks.merge_counts``)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, counts):
        return checks_mod.merge_counts(acc, counts)

    def merge_accumulators(self, accs):
        out: dict = {}
        for acc in accs:
            out = checks_mod.merge_counts(out, acc)
        return out

    def extract_output(self, acc):
        return acc


def drop_and_assign(batch, dropped, plan: dict, valid_fraction: float, snippet: int) -> tuple[dict, list]:
    """Keyed-doc batch → ({(split, shard): [(id, text, key)]}, rejects): the
    near duplicates in ``dropped`` (key → kept id) become ``duplicate_near``
    rejects, every other document goes to its shard."""
    parts: dict = {}
    rejects = []
    for key, doc in batch:
        kept = dropped.get(key)
        if kept is not None:
            rejects.append(("duplicate_near", doc[0], doc[2], doc[3], doc[1][:snippet], kept))
        else:
            parts.setdefault(shards.assign_split(doc[0], key, plan, valid_fraction), []).append((doc[0], doc[1], key))
    return parts, rejects


class DropAndAssign(beam.DoFn):
    """Keyed-doc batch → ((split, shard), [(id, text, key)]) sub-batches and
    ``rejects`` (one list per batch).  Dropping near duplicates here, in the
    pass that assigns shards anyway, saves a pass over the texts."""

    def __init__(self, valid_fraction: float, snippet_chars: int):
        self.valid_fraction = valid_fraction
        self.snippet = snippet_chars

    def process(self, batch, plan, dropped=None) -> Iterator[Any]:
        parts, rejects = drop_and_assign(batch, dropped or {}, plan, self.valid_fraction, self.snippet)
        if rejects:
            yield beam.pvalue.TaggedOutput("rejects", rejects)
        yield from parts.items()


def _split_items(batch) -> list:
    """Keyed-doc batch → [(key, id)]: what the split plan needs, without texts."""
    return [(key, doc[0]) for key, doc in batch]


def _survivors(items, dropped=None) -> list:
    return [item for item in items if item[0] not in dropped] if dropped else items


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


class WriteShard(beam.DoFn):
    """((split, shard), doc batches) → the shard file; yields its manifest entry."""

    def __init__(self, output: str, gzip_level: int = 6, parquet: bool = False):
        self.output = output
        self.gzip_level = gzip_level
        self.parquet = parquet

    def process(self, item, plan):
        (split, index), batches = item
        docs = [d for batch in batches for d in batch]
        yield shards.write_shard(self.output, split, index, plan["shards"][split], docs, self.gzip_level, self.parquet)


def write_empty_shards(entries: list, plan: dict, output: str, gzip_level: int, parquet: bool) -> list:
    """Manifest entries of the planned shards that got no document, written
    now, so that every planned shard file exists."""
    written = {e["path"] for e in entries}
    return [
        shards.write_shard(output, split, index, plan["shards"][split], [], gzip_level, parquet)
        for split in shards.SPLITS
        for index in range(plan["shards"][split])
        if shards.shard_path(split, index, plan["shards"][split]) not in written
    ]


def _by_reason(rejects: list) -> Iterator[tuple[str, list]]:
    parts: dict = {}
    for r in rejects:
        parts.setdefault(r[0], []).append(r)
    return iter(parts.items())


def _write_rejects(item, output, gzip_level):
    reason, lists = item
    return shards.write_rejects(output, reason, [r for rejects in lists for r in rejects], gzip_level)


def _finalize(_, output, ocfg, entries, reject_counts, read_counts, input_bytes, plan, check_info, check_counts=None):
    entries = list(entries)
    entries += write_empty_shards(entries, plan, output, ocfg["gzip_level"], ocfg["parquet"])
    entries.sort(key=lambda e: e["path"])
    stats = shards.build_stats(sum(read_counts), dict(reject_counts), entries, input_bytes)
    stats["shards"] = plan["shards"]
    stats.update(checks_mod.stats_section(check_counts or {}, check_info))
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
            >> beam.ParDo(ReadSource(as_dict(self.cfg.read), self.cfg.beam.batch_size)).with_outputs(
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
    """Exact then near-duplicate detection; returns (docs without exact
    duplicates, near-duplicate map or None, [reject PCollections]).  The map
    (dropped key → kept id) is applied where the documents are assigned to
    shards (``DropAndAssign``), so the texts are not passed over once more."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg

    def expand(self, keyed):
        dcfg = self.cfg.dedup
        snippet = self.cfg.output.reject_text_chars
        partitions, batch_size = self.cfg.beam.partitions, self.cfg.beam.batch_size
        rejects = []
        if dcfg.exact:
            exact = keyed | "Exact" >> dedup.ExactDedup(snippet, partitions, batch_size)
            keyed = exact.docs
            rejects.append(exact.rejects)
        near = keyed | "Near" >> dedup.NearDuplicateClusters(as_dict(dcfg), partitions) if dcfg.near else None
        return keyed, near, rejects


class WriteOutput(beam.PTransform):
    """{docs, counts[, near], rejects...} → shards, rejects/, manifest,
    stats.  Every key starting with ``rejects`` is a PCollection of reject
    lists (flattened once, here)."""

    def __init__(self, output: str, cfg: dict, input_bytes: int):
        super().__init__()
        self.output = output
        self.cfg = cfg
        self.input_bytes = input_bytes

    def expand(self, pcolls):
        docs, counts, near = pcolls["docs"], pcolls["counts"], pcolls.get("near")
        check_counts = pcolls.get("checks")
        rejects = [pcoll for name, pcoll in sorted(pcolls.items()) if name.startswith("rejects")]
        ocfg = as_dict(self.cfg.output)
        p = docs.pipeline
        dropped = {} if near is None else {"dropped": beam.pvalue.AsSingleton(near, default_value={})}
        plan = beam.pvalue.AsSingleton(
            docs
            | "SplitItems" >> beam.Map(_split_items)
            | "Survivors" >> beam.Map(_survivors, **dropped)
            | "SplitPlan" >> beam.CombineGlobally(SplitPlanFn(ocfg))
        )
        assigned = docs | "DropAndAssign" >> beam.ParDo(
            DropAndAssign(ocfg["valid_fraction"], ocfg["reject_text_chars"]), plan, **dropped
        ).with_outputs("rejects", main="parts")
        entries = (
            assigned.parts
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard"
            >> beam.ParDo(WriteShard(self.output, gzip_level=ocfg["gzip_level"], parquet=ocfg["parquet"]), plan)
        )
        reject_counts = (
            [*rejects, assigned.rejects]
            | "AllRejects" >> beam.Flatten()
            | "ByReason" >> beam.FlatMap(_by_reason)
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
                ocfg,
                beam.pvalue.AsList(entries),
                beam.pvalue.AsList(reject_counts),
                beam.pvalue.AsList(counts),
                self.input_bytes,
                plan,
                checks_mod.describe(self.cfg),
                *([] if check_counts is None else
                  [beam.pvalue.AsSingleton(check_counts | "MergeCheckCounts" >> beam.CombineGlobally(MergeCounts()))]),
            )
        )


def build_pipeline(p: beam.Pipeline, paths: Sequence[str], output: str, cfg: dict, input_bytes: int = 0):
    """The whole corpus pipeline on ``p``; returns the PCollection of the stats dict."""
    read = p | "Read" >> ReadCorpus(paths, cfg)
    cleaned = read.docs | "Clean" >> CleanFilter(cfg)
    checked = cleaned.docs | "Checks" >> beam.ParDo(RunChecks(cfg)).with_outputs("rejects", "checks", main="docs")
    docs, near, dedup_rejects = checked.docs | "Dedup" >> Deduplicate(cfg)
    pcolls = {"docs": docs, "counts": read.counts, "rejects_read": read.rejects, "rejects_clean": cleaned.rejects,
              "rejects_checks": checked.rejects, "checks": checked.checks}
    pcolls.update({f"rejects_dedup_{i}": r for i, r in enumerate(dedup_rejects)})
    if near is not None:
        pcolls["near"] = near
    return pcolls | "Write" >> WriteOutput(output, cfg, input_bytes)


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
    except (FileNotFoundError, ConfigError) as exc:   # no input matched, bad config: one line, not a traceback
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    return 0 if stats.get("accounted") else 1
