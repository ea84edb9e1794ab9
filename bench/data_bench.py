"""Data-path benchmark (#20.5): what the loader delivers per CPU core, its memory, what one GPU needs.

1. Needed: the text tokens/s one H100 consumes at 40 % MFU (989 TFLOP/s dense bf16) for the small
   and base presets of each model: 0.4 x 989e12 / (objective.train_flops / objective.tokens_in) of
   a batch with the preset's shapes (models built on the meta device, no weights allocated).
2. Delivered: text tokens/s (padding excluded) of the preset's batches, one torch thread:
   on the fly (JSON-lines records + ``objective.collate``, today's path) in one process, and
   token shards (``TrainData``: memory-mapped reads + ``collate_tokens``) in the trainer process
   (0 workers, one core) and with 2 background workers (the 2-cores-per-GPU budget).
3. Memory: peak resident set of a full pass over the token shards at 1x and 4x the corpus (4
   copies of every shard), in a fresh process; also without releasing mapped pages, for contrast.
4. ``--formats``: random-access read rate and resident memory of the same packed rows stored as
   our token shards, Megatron-style ``.bin``/``.idx``, an Arrow IPC file (pyarrow memory map),
   ``datasets`` (Arrow on disk) and MDS's per-sample read path (``MDSReader.get_sample_data``:
   open, seek, read; re-implemented here, mosaicml-streaming is not a dependency).

  .venv/bin/python bench/data_bench.py [--corpus GLOBS] [--models electra,t5-pegasus] [--batches 40]
                                       [--no-memory] [--formats]
Writes bench/results/data.json and prints markdown tables. Timings need a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MODELS = ("electra", "mlm-proposal", "bert-wwm", "t5-pegasus", "t5-span", "roformer-sim")
H100_BF16 = 989e12
MFU = 0.40
SHARED = Path(os.environ.get("ZH_SHARED_DATA", REPO.parent / "shared" / "data"))
# Multi-sentence documents of the shared corpus (about 15 MB of text); the sample corpus without it.
SHARED_CORPUS = ["corpus/thucnews_cnews_subset", "corpus/c3", "corpus/fewclue/chid_unlabeled.json",
                 "corpus/cmrc2018", "corpus/zhwiki_sample/wiki_00_a.jsonl"]


def default_corpus() -> str:
    if all((SHARED / p).exists() for p in SHARED_CORPUS):
        return ",".join(str(SHARED / p) for p in SHARED_CORPUS)
    return "data/sample/*.jsonl"


def config(model: str, corpus: str, size: str, *extra: str):
    from pretrain.config import config_path, load_config
    from pretrain.stages import resolve

    return resolve(load_config(config_path(model), [f"data.corpus={corpus}", "data.tokens=true", *extra], size=size))


def prepare(model: str, corpus: str) -> None:
    cmd = [sys.executable, "-m", "pretrain.launch", "--model", model, "--size", "small", "--prepare-only",
           f"data.corpus={corpus}", "data.tokens=true"]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def needed(model: str, corpus: str) -> dict:
    """tokens/s one H100 needs at 40 % MFU, per preset, from a real batch of that preset's shapes."""
    import torch

    from pretrain.data import TrainData

    out = {}
    for size in ("small", "base"):
        cfg = config(model, corpus, size, "data.loader_workers=0")
        objective = cfg.objective_class(cfg)
        batch, _ = next(iter(TrainData(cfg, objective, 0, 1)))
        with torch.device("meta"):
            net = objective.build_model()
        per_token = objective.train_flops(net, batch) / objective.tokens_in(batch)
        out[size] = MFU * H100_BF16 / per_token
    return out


def delivered(cfg, objective, batches: int, workers: int) -> float:
    """Text tokens/s of the run's batches (after 3 warm-up batches)."""
    from pretrain.data import TrainData

    cfg.data.loader_workers = workers
    it = iter(TrainData(cfg, objective, 0, 1))
    for _ in range(3):
        next(it)
    tokens, start = 0, time.perf_counter()
    for _ in range(batches):
        batch, _ = next(it)
        tokens += objective.tokens_in(batch)
    return tokens / (time.perf_counter() - start)


def throughput(model: str, corpus: str, batches: int) -> dict:
    import torch

    torch.set_num_threads(1)
    cfg = config(model, corpus, "small")
    objective = cfg.objective_class(cfg)
    out = {"tokens_1core": delivered(cfg, objective, batches, 0),
           "tokens_2workers": delivered(cfg, objective, batches, 2)}
    cfg.data.tokens = False
    out["on_the_fly_1core"] = delivered(cfg, objective, max(5, batches // 4), 0)
    return out


def rss_kb() -> dict:
    status = Path("/proc/self/status").read_text().splitlines()
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status)
            if k in ("VmHWM", "RssAnon", "RssFile")}


def memory_child(model: str, corpus: str, copies: int, release: bool) -> dict:
    """One full pass over the token shards (listed ``copies`` times as separate files) in this process."""
    import shutil
    import tempfile

    from pipeline import corpus as io
    from pretrain import token_shards
    from pretrain.data import TrainData

    cfg = config(model, corpus, "small", "data.loader_workers=0")
    objective = cfg.objective_class(cfg)
    if not release:
        token_shards.RELEASE_BYTES = 1 << 62
    src, tmp = Path(cfg.data.tokens_dir), Path(tempfile.mkdtemp(prefix="data-bench-"))
    entries = []
    for e in json.loads((src / "manifest.json").read_text())["shards"]:
        for c in range(copies):
            rel = e["path"].replace(".tok", f"-copy{c}.tok")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / e["path"], tmp / rel)
            entries.append({**e, "path": rel})
    io.write_manifest(str(tmp), entries, {})
    cfg.data.tokens_dir = str(tmp)
    data = TrainData(cfg, objective, 0, 1)
    total = sum(o.total for o in data.orders)
    before = rss_kb()
    seen = 0
    for _, meta in data:
        seen += len(meta.ids)
        if seen >= total:
            break
    after = rss_kb()
    shutil.rmtree(tmp)
    return {"samples": total, "corpus_mb": sum((src / e["path"]).stat().st_size for e in
                                               json.loads((src / "manifest.json").read_text())["shards"]) * copies / 1e6,
            "rss_before_mb": (before["RssAnon"] + before["RssFile"]) / 1e3, "peak_rss_mb": after["VmHWM"] / 1e3,
            "rss_file_mb": after["RssFile"] / 1e3, "rss_anon_mb": after["RssAnon"] / 1e3}


def in_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- storage formats
def format_child(fmt: str, folder: str, rows: int, width: int, reads: int) -> dict:
    """Random reads of packed rows in one format, in a fresh process: rows/s and resident memory."""
    import numpy as np

    rng = np.random.default_rng(0)
    order = rng.permutation(rows)
    folder = Path(folder)
    if fmt == "ours":
        from pretrain.token_shards import TokenShard
        shard = TokenShard(folder / "rows.tok")
        read = lambda k: shard.sample(int(k), width)["ids"]
    elif fmt == "megatron":
        bin_ = np.memmap(folder / "rows.bin", dtype=np.uint16, mode="r")
        idx = np.memmap(folder / "rows.idx", dtype=np.int64, mode="r")
        read = lambda k: np.array(bin_[idx[k]:idx[k] + width])
    elif fmt == "arrow":
        import pyarrow as pa
        column = pa.ipc.open_file(pa.memory_map(str(folder / "rows.arrow"))).read_all().column("ids").combine_chunks()
        read = lambda k: column[int(k)].values.to_numpy()
    elif fmt == "datasets":
        from datasets import load_from_disk
        ds = load_from_disk(str(folder / "rows.hf")).with_format("numpy")
        read = lambda k: ds[int(k)]["ids"]
    else:   # mds: MDSReader.get_sample_data's read path
        path = folder / "rows.mds"

        def read(k):
            with open(path, "rb", 0) as fh:
                fh.seek((1 + int(k)) * 4)
                begin, end = np.frombuffer(fh.read(8), np.uint32)
                fh.seek(int(begin))
                return np.frombuffer(fh.read(int(end - begin)), np.uint16)
    total = 0
    start = time.perf_counter()
    for k in order[:reads]:
        total += len(read(k))
    rate = reads / (time.perf_counter() - start)
    for k in order[reads:]:                                   # touch every row once, then measure memory
        read(k)
    mem = rss_kb()
    return {"rows_per_s": rate, "rss_mb": (mem["RssAnon"] + mem["RssFile"]) / 1e3, "tokens": total}


def write_formats(folder: Path, rows: int, width: int) -> None:
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset

    from pretrain.token_shards import Encoded, shard_bytes

    data = np.random.default_rng(1).integers(0, 50000, size=(rows, width), dtype=np.uint16)
    (folder / "rows.tok").write_bytes(shard_bytes("docs", [Encoded([data.ravel()])], np.dtype(np.uint16)))
    data.tofile(folder / "rows.bin")
    (np.arange(rows, dtype=np.int64) * width).tofile(folder / "rows.idx")
    table = pa.table({"ids": pa.array(list(data), type=pa.list_(pa.uint16()))})
    with pa.ipc.new_file(str(folder / "rows.arrow"), table.schema) as writer:
        writer.write_table(table)
    Dataset(table).save_to_disk(str(folder / "rows.hf"))
    offsets = (4 * (rows + 2) + np.arange(rows + 1, dtype=np.int64) * width * 2).astype(np.uint32)
    (folder / "rows.mds").write_bytes(np.uint32(rows).tobytes() + offsets.tobytes() + data.tobytes())


def formats(rows: int, width: int, reads: int) -> list[dict]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="formats-") as tmp:
        write_formats(Path(tmp), rows, width)
        return [{"format": f, **in_child("--format-child", f, tmp, str(rows), str(width), str(reads))}
                for f in ("ours", "megatron", "arrow", "datasets", "mds")]


# ---------------------------------------------------------------- report
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=default_corpus())
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--formats", action="store_true")
    parser.add_argument("--format-rows", type=int, default=200_000)
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--format-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        model, corpus, copies, release = args.memory_child
        print(json.dumps(memory_child(model, corpus, int(copies), release == "1")))
        return 0
    if args.format_child:
        fmt, folder, rows, width, reads = args.format_child
        print(json.dumps(format_child(fmt, folder, int(rows), int(width), int(reads))))
        return 0
    results = {"corpus": args.corpus, "models": {}}
    print(f"corpus: {args.corpus}\n")
    print("| model | H100 needs, small (tok/s) | H100 needs, base (tok/s) | on the fly, 1 core | token shards, "
          "1 core | token shards, 2 workers | per-core gain | cores for small | cores for base |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        prepare(model, args.corpus)
        need, got = needed(model, args.corpus), throughput(model, args.corpus, args.batches)
        results["models"][model] = {"needed": need, **got}
        print(f"| {model} | {need['small']:,.0f} | {need['base']:,.0f} | {got['on_the_fly_1core']:,.0f} | "
              f"{got['tokens_1core']:,.0f} | {got['tokens_2workers']:,.0f} | "
              f"{got['tokens_1core'] / got['on_the_fly_1core']:.1f}x | {need['small'] / got['tokens_1core']:.2f} | "
              f"{need['base'] / got['tokens_1core']:.2f} |")
    if not args.no_memory:
        model = args.models.split(",")[0]
        print(f"\nResident memory of one pass over the token shards ({model}, loader process):\n")
        print("| corpus | samples | shard MB | peak RSS MB | file-backed RSS MB at the end | anonymous RSS MB |")
        print("|---|---:|---:|---:|---:|---:|")
        results["memory"] = {}
        for label, copies, release in (("1x", 1, "1"), ("4x", 4, "1"), ("4x, pages kept mapped", 4, "0")):
            m = in_child("--memory-child", model, args.corpus, str(copies), release)
            results["memory"][label] = m
            print(f"| {label} | {m['samples']:,} | {m['corpus_mb']:.1f} | {m['peak_rss_mb']:.0f} | "
                  f"{m['rss_file_mb']:.0f} | {m['rss_anon_mb']:.0f} |")
    if args.formats:
        print(f"\nRandom reads of {args.format_rows:,} packed rows of 128 uint16 tokens:\n")
        print("| format | rows/s | RSS MB after touching every row |")
        print("|---|---:|---:|")
        results["formats"] = formats(args.format_rows, 128, min(20_000, args.format_rows))
        for f in results["formats"]:
            print(f"| {f['format']} | {f['rows_per_s']:,.0f} | {f['rss_mb']:.0f} |")
    out = REPO / "bench" / "results" / "data.json"
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
