"""What each Beam runner costs on one input, and whether they agree byte for byte.

Runs the corpus pipeline (and the pairs pipeline on its output) on the same
input with: the DirectRunner in memory (the default: bundle-based for the corpus pipeline,
the FnApiRunner for pairs; ``fnapi``: the FnApiRunner for both) and with 2 worker processes, the
PortableRunner against Beam's local job service with an external SDK worker
pool, and the DaskRunner on a local scheduler with 1 and with 2 worker
processes (1 thread each).  Services are started and stopped by this script
(pipeline/local_services.py).  Writes bench/results/runners.json: seconds
per run (wall, from submission to the last file written; service start-up
excluded) and whether every output file equals the DirectRunner's.

    python bench/runners_bench.py [--input GLOB ...] [--runs mem,fnapi,direct2,portable,dask1,dask2] [--no-pairs]

Default input: the two zhwiki_sample files of the shared data (~2 MB).
Run on a quiet machine: the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.local_services import dask_cluster, portable_service  # noqa: E402
from pipeline.pairs import build_pairs  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402

SHARED = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))
RESULTS = ROOT / "bench" / "results" / "runners.json"


def services(run: str):
    """Context manager yielding (runner, flags) for a run name."""
    if run == "mem":
        return contextlib.nullcontext(("DirectRunner", []))
    if run == "fnapi":
        return contextlib.nullcontext(("DirectRunner", ["--direct_running_mode=in_memory"]))
    if run == "direct2":
        return contextlib.nullcontext(("DirectRunner", ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]))
    cm = portable_service() if run == "portable" else dask_cluster(int(run[-1]))

    @contextlib.contextmanager
    def split():
        with cm as flags:
            yield flags[0].split("=", 1)[1], flags[1:]
    return split()


def files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", action="append", default=None)
    ap.add_argument("--runs", default="mem,fnapi,direct2,portable,dask1,dask2")
    ap.add_argument("--no-pairs", action="store_true")
    args = ap.parse_args()
    inputs = args.input or [str(SHARED / "corpus" / "zhwiki_sample" / "*.jsonl")]
    work = Path(tempfile.mkdtemp(prefix="runners_bench_"))
    results: dict = {"input": inputs, "machine": {"cpus": os.cpu_count(), "load_avg_1min_at_start": round(os.getloadavg()[0], 2)},
                     "runs": {}}
    reference: dict = {}
    try:
        for run in args.runs.split(","):
            with services(run) as (runner, flags):
                out = work / run
                start = time.perf_counter()
                stats = run_pipeline(inputs, str(out / "clean"), runner=runner, extra_beam_args=flags)
                clean_s = time.perf_counter() - start
                row = {"pipeline_s": round(clean_s, 2), "read": stats["read"], "written": stats["written"]}
                if not args.no_pairs:
                    start = time.perf_counter()
                    build_pairs(str(out / "clean"), str(out / "pairs"), runner=runner, extra_args=flags)
                    row["pairs_s"] = round(time.perf_counter() - start, 2)
            produced = files(out)
            reference = reference or produced
            row["same_bytes_as_first_run"] = produced == reference
            row["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
            results["runs"][run] = row
            print(f"{run}: {json.dumps(row)}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
