"""Speed of the pipeline with every data-quality step on: per-step share of the time, MB/s per core.

    python bench/quality_bench.py [--mb 20] [--batch 1000]

Builds the same real-text corpus as ``bench/pipeline_bench.py`` (shared corpora plus edited
copies) and runs the pipeline's own per-batch functions in ONE process, timing each step with
the process CPU clock (so the figure is per core, and a loaded machine slows it less than wall
time): read, clean, filters, the checks in one pass as the pipeline runs them (language ID, word
lists, PII, decontamination with its index build counted apart: once per worker, from the disk
cache after the first build, both reported; quality score
under a character 4-gram model fitted on the Wikipedia sample, fitting not counted), exact +
near dedup (MinHash, LSH, verification), shard writing. A second pass times each check alone,
for its share. Target
(#22): >= 2 MB/s per core with every step on. Writes bench/results/quality.json.

Run it on a quiet machine; the figures are not recorded in BENCHMARKS.md by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import checks, clean, dedup, filters, quality, readers, shards  # noqa: E402
from pipeline.config import as_dict, load_config  # noqa: E402
from pipeline.run import clean_and_filter  # noqa: E402
from pipeline_bench import SHARED, _batches, build_corpus  # noqa: E402


class Clock:
    """CPU seconds per named step."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, name, fn, *args):
        start = time.process_time()
        out = fn(*args)
        self.seconds[name] += time.process_time() - start
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    if not (SHARED / "corpus").is_dir():
        print(f"shared data not found under {SHARED} (set ZH_SHARED_DATA)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths, nbytes, n_docs = build_corpus(work, args.mb)
        model_path = str(work / "quality.npz")
        cfg0 = load_config(None)
        ref = [clean.build_cleaner(cfg0.clean)(json.loads(line)["text"])
               for line in (SHARED / "corpus/zhwiki_sample/wiki_00_a.jsonl").open(encoding="utf-8")]
        quality.calibrate(quality.fit(ref, 4), ref[::10]).save(model_path)
        cfg = load_config(None, {"quality": {"model": model_path}})
        clock = Clock()
        os.environ["ZH_PRETRAIN_CACHE"] = str(work / "cache")     # a cold decontamination index cache
        built = time.process_time()
        checks.Checks(cfg)
        cold_s = time.process_time() - built
        built = time.process_time()
        checker = checks.Checks(cfg)                               # what every later run or worker pays
        setup_s = time.process_time() - built
        cleaner, fs = clean.build_cleaner(cfg.clean), filters.build_filters(cfg.filters)
        read_cfg, dcfg = as_dict(cfg.read), as_dict(cfg.dedup)
        keyed = []
        for path in paths:
            events = clock("read", lambda p: list(readers.read_source(p, read_cfg)), path)
            docs = [payload for kind, payload in events if kind == "doc"]
            for batch in _batches(docs, args.batch):
                cleaned = clock("clean", lambda b: [(d[0], cleaner(d[1]), d[2], d[3]) for d in b], batch)
                kept, _ = clock("filters", clean_and_filter, cleaned, str, fs, True, 300)
                kept = clock("checks", lambda b: checks.run_checks(b, checker)[0], kept)
                keyed.extend(kept)
        kept, _ = clock("dedup exact", dedup.keep_first, [keyed], 300)
        minhash = dedup.MinHasher(dcfg)
        sigs = clock("dedup near", lambda: [minhash(b) for b in _batches(kept, args.batch)])
        clock("dedup near", lambda: dedup.candidate_pairs(np.concatenate([s[1][0] for s in sigs]),
                                                          np.concatenate([s[1][1] for s in sigs]),
                                                          dcfg["max_bucket_size"]))
        out = work / "out"
        clock("write", lambda: shards.write_shard(str(out), "train", 0, 1, [(d[0], d[1], k, d[2]) for k, d in kept]))
        del keyed, kept, sigs
        # the checks' split: a second pass, one check at a time, on the same batches (not counted)
        split = Clock()
        for path in paths:
            docs = [payload for kind, payload in readers.read_source(path, read_cfg) if kind == "doc"]
            for batch in _batches(docs, args.batch):
                kept, _ = clean_and_filter([(d[0], cleaner(d[1]), d[2], d[3]) for d in batch], str, fs, True, 300)
                _timed_checks(split, kept, checker)
    total = sum(clock.seconds.values())
    mb = nbytes / 1e6
    result = {"input_mb": round(mb, 2), "documents": n_docs, "cpu_seconds": round(total, 2),
              "mb_per_s_per_core": round(mb / total, 3), "decontam_index_and_setup_s": round(setup_s, 2),
              "decontam_index_and_setup_s_cold_cache": round(cold_s, 2),
              "steps": {k: {"seconds": round(v, 3), "share": round(v / total, 4)} for k, v in clock.seconds.items()},
              "checks_one_at_a_time": {k: round(v, 3) for k, v in split.seconds.items()}}
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/quality.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"Pipeline with every data-quality step on, one process ({mb:.1f} MB, {n_docs} documents): "
          f"{mb / total:.2f} MB/s per core (target >= 2); setup {setup_s:.1f} s per worker "
          f"({cold_s:.1f} s the first time, building the decontamination index cache)")
    print("| step | CPU s | share |")
    print("|---|---:|---:|")
    for k, v in sorted(clock.seconds.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} | {v / total:.1%} |")
    whole = sum(split.seconds.values())
    print(f"\nthe checks one at a time (second pass, {whole:.2f} s; one pass shares the per-document loop): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in split.seconds.items()))
    return 0


def _timed_checks(clock: Clock, batch: list, c: checks.Checks) -> list:
    """``checks.run_checks`` once per check (the others switched off), so each gets its time."""
    for name in ("langid", "wordlists", "pii", "decontam", "quality"):
        single = checks.Checks.__new__(checks.Checks)
        single.__dict__.update({k: None for k in ("langid", "wordlists", "pii", "decontam", "quality")})
        single.exact, single.snippet = c.exact, c.snippet
        setattr(single, name, getattr(c, name))
        batch = clock(name, checks.run_checks, batch, single)[0]
    return batch


if __name__ == "__main__":
    sys.exit(main())
