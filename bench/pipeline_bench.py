"""Benchmark of the Beam corpus pipeline against a plain Python loop.

Builds a >= 50 MB JSON-lines corpus from the real texts in the shared data
folder (ZH_SHARED_DATA, default /work/shared/data; corpus/ only, no
evaluation sets), topped up with lightly edited copies (so near-dedup has
work to do), in a temporary folder outside the repository.  Then, in one
process and on the same input, it times:

* ``plain_loop``: one process, no Beam, the pipeline's own per-batch
  functions (readers, clean + filter, exact dedup, MinHash, LSH candidate
  pairs, pair verification, clusters, split plan, shard and reject writers)
  called on the whole corpus at once, writing the same files;
* ``beam_in_memory``: the default in-memory run (``make data``): Beam's bundle-based
  DirectRunner (see ``pipeline.run.pipeline_options``);
* ``beam_fnapi_in_memory`` (``--runs fnapi``): the FnApiRunner, ``--direct_running_mode=in_memory``;
* ``beam_1_worker`` / ``beam_2_workers``: DirectRunner multi_processing.

Writes bench/results/pipeline.json with MB/s, docs/s, the ratios the issue
targets (Beam / plain time <= 1.25, 2 workers / 1 worker speed-up >= 1.6,
full pipeline >= 2 MB/s per core) and whether every run produced the same
manifest as the plain loop (and byte-identical output files: shards, rejects/,
manifest.json, stats.json).  Each Beam mode also runs once on a 20-document
input: that is its fixed cost (pipeline construction and translation, worker
processes importing Beam, then shut down one after the other), which does not
shrink with the corpus; ``speedup_2_over_1_worker_net_of_fixed`` divides it
out.  The 1-minute load average is recorded with every run (shared machine), with
the CPU seconds of the main process and of the worker processes, which do not
depend on the load.  ``--repeat N`` runs the whole sequence N times,
interleaved, keeps each run's fastest (all in ``seconds_all``) and checks
that every re-run wrote the same files.

    python bench/pipeline_bench.py [--mb 50] [--runs plain,mem,fnapi,1,2] [--repeat 1] [--keep] [--every-step]

The plain loop also times each of its steps (process CPU time): the JSON's
``plain_loop_step_shares`` and a table printed at the end give each step's share of the time.

``--every-step`` adds the quality score (a character 4-gram model fitted on the Wikipedia
sample) to the default checks, so every data-quality step runs (#22), and writes
bench/results/pipeline_every_step.json instead.

The decontamination index is built once before the timed runs (``decontam_index_seconds``:
cold, and loaded from its disk cache), so every run loads it from the cache, as every run after
a user's first does.

``--memory 1,4`` measures memory instead: peak RSS of the runner process and
of its largest worker, each Beam mode in a fresh process, on real texts only
(``--mb`` x 1 and x 4), into bench/results/pipeline_memory.json:

    python bench/pipeline_bench.py --memory 1,4 --mb 8 --runs mem,2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import checks, clean, dedup, filters, readers, shards  # noqa: E402
from pipeline.config import PipelineConfig, as_dict, load_config  # noqa: E402
from pipeline.events import DOCS  # noqa: E402
from pipeline.typed_config import build  # noqa: E402
from pipeline.run import (CHECKS, DROP, ENTRY, IDS, PLAN, READ, REJECTED, RENAME, assign_shards, clean_and_filter,  # noqa: E402
                          dedup_partitions, finalize, run_pipeline, shard_documents)

SHARED = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))
RESULTS = ROOT / "bench" / "results" / "pipeline.json"


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------


def _csv_column(data: str, column: str):
    for row in csv.DictReader(io.StringIO(data)):
        if row.get(column):
            yield row[column]


def real_texts(shared: Path):
    """(source, text) from every corpus/ file, whatever its format."""
    c = shared / "corpus"
    for line in open(c / "thucnews_cnews_subset/cnews.val.txt", encoding="utf-8"):
        yield "cnews", line.split("\t", 1)[-1]
    for name in ("dev.txt", "test.txt"):
        for line in open(c / "thucnews_titles" / name, encoding="utf-8"):
            yield "titles", line.split("\t", 1)[0]
    for name in ("wiki_00_a.jsonl", "wiki_00_b.jsonl"):
        for line in open(c / "zhwiki_sample" / name, encoding="utf-8"):
            yield "wiki", json.loads(line)["text"]
    for name in ("ChnSentiCorp_htl_all.csv", "waimai_10k.csv"):
        yield from (("reviews", t) for t in _csv_column(open(c / "sophonplus_reviews" / name, encoding="utf-8-sig").read(), "review"))
    with zipfile.ZipFile(c / "sophonplus_reviews/online_shopping_10_cats.zip") as z:
        data = z.read("online_shopping_10_cats.csv").decode("utf-8-sig")
    yield from (("shopping", t) for t in _csv_column(data, "review"))
    yield from (("weibo", t) for t in _csv_column(open(c / "weibo_senti_subset/weibo_senti_100k_subset.csv", encoding="utf-8-sig").read(), "review"))
    for name, field in (("chid_unlabeled.json", "content"), ("eprstmt_unlabeled.json", "sentence"),
                        ("iflytek_test_public.json", "sentence"), ("csldcp_test_public.json", "content")):
        for line in open(c / "fewclue" / name, encoding="utf-8"):
            yield "fewclue", json.loads(line)[field]
    for name in ("cmrc2018_dev.json", "cmrc2018_trial.json"):
        for art in json.load(open(c / "cmrc2018" / name, encoding="utf-8"))["data"]:
            for para in art["paragraphs"]:
                yield "cmrc", para["context"]
    for name in ("c3-m-train.json", "c3-m-dev.json", "c3-m-test.json", "c3-d-dev.json"):
        for item in json.load(open(c / "c3" / name, encoding="utf-8")):
            yield "c3", "\n".join(item[0])
    for path in sorted((c / "chinese_poetry").glob("*.json")):
        for item in json.load(open(path, encoding="utf-8")):
            paras = item.get("paragraphs") or item.get("content") or []
            if isinstance(paras, list) and paras:
                yield "poetry", "\n".join(p if isinstance(p, str) else "" for p in paras)
    text = open(c / "sogou_news_smarty/news_sohusite_xml.smarty.utf8.dat", encoding="utf-8").read()
    for chunk in text.split("<content>")[1:]:
        yield "sogou", chunk.split("</content>", 1)[0]


def _edited(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(max(1, len(chars) // 80)):
        chars[rng.randrange(len(chars))] = rng.choice("的了是在有和")
    return "".join(chars)


def build_corpus(work: Path, target_mb: float, n_files: int = 16, cap: bool = False) -> tuple[list[str], int, int]:
    """Write the corpus as n_files JSON-lines files; returns (paths, bytes, docs).
    Every real text, topped up with edited copies to ``target_mb``; with
    ``cap``, real texts (in a fixed shuffled order) only up to ``target_mb``."""
    docs = [(s, t) for s, t in real_texts(SHARED) if t and t.strip()]
    rng = random.Random(0)
    if cap:
        random.Random(1).shuffle(docs)
    out = []
    size = 0
    for i, (source, text) in enumerate(docs):
        if cap and size >= target_mb * 1e6:
            break
        line = json.dumps({"id": f"{source}-{i:07d}", "text": text}, ensure_ascii=False) + "\n"
        out.append(line)
        size += len(line.encode("utf-8"))
    copy = 0
    while size < target_mb * 1e6:
        source, text = docs[rng.randrange(len(docs))]
        line = json.dumps({"id": f"edit-{copy:07d}", "text": _edited(text, rng)}, ensure_ascii=False) + "\n"
        out.append(line)
        size += len(line.encode("utf-8"))
        copy += 1
    rng.shuffle(out)
    work.mkdir(parents=True, exist_ok=True)
    paths = []
    per = (len(out) + n_files - 1) // n_files
    for k in range(n_files):
        path = work / f"part-{k:03d}.jsonl"
        path.write_text("".join(out[k * per : (k + 1) * per]), encoding="utf-8")
        paths.append(str(path))
    return paths, size, len(out)


# --------------------------------------------------------------------------
# Plain loop: the same functions, one process, in-memory dicts
# --------------------------------------------------------------------------


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


STEP_CPU: dict[str, float] = defaultdict(float)      # the last plain loop's CPU seconds per step


@contextlib.contextmanager
def _Step(name: str):
    """``with _Step("name"):`` adds the block's process CPU time to ``STEP_CPU[name]``."""
    start = time.process_time()
    yield
    STEP_CPU[name] += time.process_time() - start


def plain_loop(paths: list[str], output: str, cfg: dict) -> dict:
    """The pipeline's own per-batch functions, called in order in one process,
    with whole-corpus dicts and arrays where Beam shuffles; writes the same
    shards, rejects/, manifest.json and stats.json. Each step's CPU time goes
    into ``STEP_CPU`` (its share of the time: the table the bench prints)."""
    STEP_CPU.clear()
    with _Step("setup (checks' tables, decontamination index)"):
        checker = checks.Checks(build(PipelineConfig, cfg))
    check_counts: dict = {}
    cleaner = clean.build_cleaner(cfg["clean"])
    fs = filters.build_filters(cfg["filters"])
    dcfg, ocfg = cfg["dedup"], cfg["output"]
    size, snippet = cfg["beam"]["batch_size"], ocfg["reject_text_chars"]
    read = 0
    rejects: list = []
    keyed: list = []
    for path in paths:
        docs = []
        with _Step("read"):
            for kind, payload in readers.read_source(path, cfg["read"]):
                read += 1
                (docs if kind == "doc" else rejects).append(payload)
        for batch in _batches(docs, size):
            with _Step("clean + filters + exact key"):
                out, bad = clean_and_filter(batch, cleaner, fs, True, snippet)
            rejects.extend(bad)
            with _Step("checks (language, word lists, PII, decontamination, quality)"):
                out, bad, counts, _ = checks.run_checks(out, checker)
            check_counts = checks.merge_counts(check_counts, counts)
            keyed.extend(out)
            rejects.extend(bad)
    with _Step("exact dedup"):
        kept, dups = dedup.keep_first([keyed], snippet)
    rejects.extend(dups)
    minhash = dedup.MinHasher(dcfg)
    tables, ids, owners = [], [], []
    with _Step("MinHash signatures"):
        for batch in _batches(kept, size):
            sigs, (bucket_ids, bucket_owners), words = minhash(batch)
            ids.append(bucket_ids)
            owners.append(bucket_owners)
            tables.append(dedup.sig_table(words, sigs, [d[0] for _, d in batch], [len(d[1]) for _, d in batch]))
    with _Step("LSH pairs, verification, survivors"):
        pairs = dedup.candidate_pairs(np.concatenate(ids), np.concatenate(owners), dcfg["max_bucket_size"])
        lookup = dedup.SigLookup(tables)
        halves = [dedup.attach_end(pairs, end, lookup) for end in (0, 1)]
        edges = dedup.verify_halves(halves, dcfg["threshold"], dcfg["keep"])
        items = [(key, doc[0], doc[2], doc[3]) for key, doc in kept]
        survivors, dropped = dedup.survivors(items, dedup.drop_candidates(edges))
    with _Step("split plan, shard assignment, shards, rejects, stats"):
        acc = shards.SplitPlan.add_all(shards.SplitPlan.create_accumulator(), [(k, i) for k, i, _, _ in survivors], ocfg["valid_fraction"])
        plan = shards.SplitPlan.finish(acc, ocfg)
        renames, id_counts = shards.id_census(survivors)
        groups: dict[tuple, list] = defaultdict(list)
        bound = [(DOCS, batch) for batch in _batches(kept, size)]
        bound += [(DROP, [(key, (i, k)) for key, i, k in dropped]), (RENAME, [(key, (old, new)) for key, old, new in renames])]
        for event in bound:
            for shard, sub in assign_shards(event, plan, ocfg["valid_fraction"]).items():
                groups[shard].append(sub)
        summary = [(READ, read), (PLAN, plan), (IDS, id_counts), (CHECKS, check_counts)]
        for (split, index, count), grouped in sorted(groups.items()):
            docs, near = shard_documents(grouped, snippet)
            rejects.extend(near)
            summary.append((ENTRY, shards.write_shard(output, split, index, count, docs, ocfg["gzip_level"])))
        by_reason: dict[str, list] = defaultdict(list)
        for r in rejects:
            by_reason[r[0]].append(r)
        summary += [(REJECTED, shards.write_rejects(output, reason, rs, ocfg["gzip_level"])) for reason, rs in sorted(by_reason.items())]
        stats = finalize(summary, output, ocfg, sum(os.path.getsize(p) for p in paths),
                         checks.describe(build(PipelineConfig, cfg)))
    return stats


# --------------------------------------------------------------------------

def _file_digests(out: Path) -> dict:
    return {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(out.rglob("*")) if f.is_file()}


RUN_NAMES = {"mem": "beam_in_memory", "fnapi": "beam_fnapi_in_memory", "1": "beam_1_worker", "2": "beam_2_workers"}


def beam_args(run: str) -> list[str]:
    if run == "mem":
        return []
    if run == "fnapi":
        return ["--direct_running_mode=in_memory"]
    return ["--direct_running_mode=multi_processing", f"--direct_num_workers={int(run)}"]


def fixed_costs(runs: list[str], work: Path) -> dict:
    """Seconds each Beam mode takes on 20 documents: its corpus-independent cost."""
    docs = [t for _, t in zip(range(200), (t for _, t in real_texts(SHARED) if len(t) > 50))][::10]
    work.mkdir(parents=True, exist_ok=True)
    path = work / "tiny.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(docs)), encoding="utf-8")
    out = {}
    for run in runs:
        start = time.perf_counter()
        run_pipeline([str(path)], str(work / f"out-{run}"), str(ROOT / "configs/pipeline.yaml"), extra_beam_args=beam_args(run))
        out[RUN_NAMES[run]] = round(time.perf_counter() - start, 2)
    print(f"fixed cost (20 documents): {out}", file=sys.stderr)
    return out


def _child_run(run: str, out: str, paths: list[str]) -> int:
    """One Beam run in this (fresh) process; prints its peak RSS and its workers'."""
    import resource

    stats = run_pipeline(paths, out, str(ROOT / "configs/pipeline.yaml"), extra_beam_args=beam_args(run))
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"peak_rss_mb_main": round(self_kb / 1024, 1), "peak_rss_mb_largest_worker": round(children_kb / 1024, 1),
                      "written": stats["written"], "duplicates_near": stats["duplicates_near"]}))
    return 0


def memory(mb: float, scales: list[int], runs: list[str], work: Path) -> dict:
    """Peak RSS of the Beam runner process and of its largest worker process,
    each run in a fresh process, on corpora of ``mb`` x scale."""
    import subprocess

    cfg = as_dict(load_config(str(ROOT / "configs/pipeline.yaml")))
    out: dict = {}
    for scale in scales:
        paths, nbytes, ndocs = build_corpus(work / f"input-{scale}x", mb * scale, cap=True)
        row = out[f"{scale}x"] = {"mb": round(nbytes / 1e6, 2), "documents": ndocs,
                                  "dedup_partitions": dedup_partitions(cfg, nbytes)}
        for run in runs:
            proc = subprocess.run([sys.executable, __file__, "--child", run, str(work / f"out-{scale}-{run}"), *paths],
                                  capture_output=True, text=True, check=True)
            row[RUN_NAMES[run]] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{scale}x {RUN_NAMES[run]}: {row[RUN_NAMES[run]]}", file=sys.stderr)
    return out


def every_step_config(work: Path, base: str) -> str:
    """``base`` plus a quality model fitted on the Wikipedia sample (fitting not timed), as a
    config file: every data-quality step on (language ID, word lists, PII, decontamination,
    quality score)."""
    import yaml

    from pipeline import quality

    cfg0 = load_config(base)
    cleaner = clean.build_cleaner(cfg0.clean)
    ref = [cleaner(json.loads(line)["text"]) for line in (SHARED / "corpus/zhwiki_sample/wiki_00_a.jsonl").open(encoding="utf-8")]
    model = str(work / "quality.npz")
    quality.calibrate(quality.fit(ref, 4), ref[::10]).save(model)
    path = work / "pipeline-every-step.yaml"
    path.write_text(yaml.safe_dump(as_dict(load_config(base, {"quality": {"model": model}})), allow_unicode=True), encoding="utf-8")
    return str(path)


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return _child_run(sys.argv[2], sys.argv[3], sys.argv[4:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--runs", default="plain,mem,1,2")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the whole sequence N times (interleaved) and keep each run's fastest")
    ap.add_argument("--keep", action="store_true", help="keep the temporary corpus and outputs")
    ap.add_argument("--every-step", action="store_true",
                    help="also the quality score (a character 4-gram model fitted on the Wikipedia sample): every "
                         "data-quality step on; writes pipeline_every_step.json")
    ap.add_argument("--memory", default=None, metavar="SCALES",
                    help="only measure peak RSS on corpora of --mb x each scale, e.g. 1,4 (writes pipeline_memory.json)")
    args = ap.parse_args()
    if not (SHARED / "corpus").exists():
        print(f"shared data not found at {SHARED}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="pipeline_bench_"))
    if args.memory:
        try:
            result = {"peak_rss": memory(args.mb, [int(x) for x in args.memory.split(",")],
                                         [r for r in args.runs.split(",") if r != "plain"], work)}
            (RESULTS.parent / "pipeline_memory.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            print(json.dumps(result, indent=2))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    try:
        t0 = time.perf_counter()
        paths, nbytes, ndocs = build_corpus(work / "input", args.mb)
        print(f"corpus: {ndocs} docs, {nbytes / 1e6:.1f} MB in {len(paths)} files ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
        config_path = str(ROOT / "configs/pipeline.yaml")
        if args.every_step:
            config_path = every_step_config(work, config_path)
        cfg = as_dict(load_config(config_path))
        # The decontamination index is cached on disk after its first build (pipeline/decontam.py):
        # built here, untimed, so every timed run loads it, as every run after a user's first does.
        os.environ["ZH_PRETRAIN_CACHE"] = str(work / "cache")
        from pipeline import decontam
        t0 = time.perf_counter()
        decontam.build_index(cfg["decontam"])
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        decontam.build_index(cfg["decontam"])
        index_s = {"cold_cache": round(cold, 2), "warm_cache": round(time.perf_counter() - t0, 2)}
        results: dict = {
            "config": "configs/pipeline.yaml" + (" + quality.model (every step on)" if args.every_step else ""),
            "input": {"documents": ndocs, "mb": round(nbytes / 1e6, 2), "files": len(paths)},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1min_at_start": round(os.getloadavg()[0], 2)},
            "runs": {},
            "decontam_index_seconds": index_s,
        }
        manifests, outputs = {}, {}
        runs = args.runs.split(",")
        results["fixed_cost_seconds"] = fixed_costs([r for r in runs if r != "plain"], work / "tiny")
        for run in [run for _ in range(args.repeat) for run in runs]:
            out = work / f"out-{run}"
            cpu0 = os.times()
            start = time.perf_counter()
            if run == "plain":
                name = "plain_loop"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                stats = plain_loop(paths, str(out), cfg)
            else:
                name = RUN_NAMES[run]
                stats = run_pipeline(paths, str(out), config_path, extra_beam_args=beam_args(run))
            elapsed = time.perf_counter() - start
            cpu1 = os.times()
            if name in manifests and (manifests[name], outputs[name]) != ((out / "manifest.json").read_text(), _file_digests(out)):
                raise RuntimeError(f"{name}: a repeated run wrote different files")
            manifests[name] = (out / "manifest.json").read_text()
            outputs[name] = _file_digests(out)
            previous = results["runs"].get(name)
            if previous and previous["seconds"] <= elapsed:
                previous["seconds_all"].append(round(elapsed, 2))
                continue
            if name == "plain_loop":
                total = sum(STEP_CPU.values())
                results["plain_loop_step_shares"] = {k: {"cpu_s": round(v, 2), "share": round(v / total, 3)}
                                                     for k, v in sorted(STEP_CPU.items(), key=lambda kv: -kv[1])}
            results["runs"][name] = {
                "seconds": round(elapsed, 2),
                "mb_per_s": round(nbytes / 1e6 / elapsed, 2),
                "docs_per_s": round(ndocs / elapsed, 1),
                "written": stats["written"],
                "duplicates_exact": stats["duplicates_exact"],
                "duplicates_near": stats["duplicates_near"],
                "rejected": sum(stats["rejected"].values()),
                "load_avg_1min_after": round(os.getloadavg()[0], 2),
                # CPU seconds, load-independent: this process (plain loop / Beam runner) and the worker processes
                "cpu_s_main": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2),
                "cpu_s_workers": round(cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system, 2),
                "seconds_all": [*(previous["seconds_all"] if previous else []), round(elapsed, 2)],
            }
            print(f"{name}: {json.dumps(results['runs'][name])}", file=sys.stderr)
        r = results["runs"]
        if "plain_loop" in r:
            ref = manifests["plain_loop"]
            results["same_manifest_as_plain_loop"] = {k: v == ref for k, v in manifests.items()}
            results["same_files_as_plain_loop"] = {k: v == outputs["plain_loop"] for k, v in outputs.items()}
        ratios = {}
        if "plain_loop" in r and "beam_in_memory" in r:
            ratios["beam_in_memory_over_plain_time"] = round(r["beam_in_memory"]["seconds"] / r["plain_loop"]["seconds"], 3)
        if "plain_loop" in r and "beam_fnapi_in_memory" in r:
            ratios["beam_fnapi_in_memory_over_plain_time"] = round(r["beam_fnapi_in_memory"]["seconds"] / r["plain_loop"]["seconds"], 3)
        if "plain_loop" in r and "beam_1_worker" in r:
            ratios["beam_1_worker_over_plain_time"] = round(r["beam_1_worker"]["seconds"] / r["plain_loop"]["seconds"], 3)
        if "beam_1_worker" in r and "beam_2_workers" in r:
            ratios["speedup_2_over_1_worker"] = round(r["beam_1_worker"]["seconds"] / r["beam_2_workers"]["seconds"], 3)
            fixed = results["fixed_cost_seconds"]
            ratios["speedup_2_over_1_worker_net_of_fixed"] = round(
                (r["beam_1_worker"]["seconds"] - fixed["beam_1_worker"]) / (r["beam_2_workers"]["seconds"] - fixed["beam_2_workers"]), 3)
        if "beam_in_memory" in r:
            ratios["beam_in_memory_mb_per_s_per_core"] = r["beam_in_memory"]["mb_per_s"]
            ratios["beam_in_memory_mb_per_cpu_s"] = round(nbytes / 1e6 / r["beam_in_memory"]["cpu_s_main"], 2)
        if "plain_loop" in r:
            ratios["plain_loop_mb_per_cpu_s"] = round(nbytes / 1e6 / r["plain_loop"]["cpu_s_main"], 2)
        results["ratios"] = ratios
        results["targets"] = {"beam_over_plain_time_max": 1.25, "speedup_2_workers_min": 1.6, "mb_per_s_per_core_min": 2.0}
        target = RESULTS.with_name("pipeline_every_step.json") if args.every_step else RESULTS
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(json.dumps(results, indent=2, ensure_ascii=False))
        if "plain_loop_step_shares" in results:
            print("\nEach step's share of the plain loop's CPU time (its fastest run):\n| step | CPU s | share |\n|---|---:|---:|")
            for k, v in results["plain_loop_step_shares"].items():
                print(f"| {k} | {v['cpu_s']:.2f} | {100 * v['share']:.1f} % |")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
