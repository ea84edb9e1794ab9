"""What ``make pretrain`` runs: data and tokenizer stages if stale, then DeepSpeed training.

  python -m pretrain.launch --model t5-pegasus [--size tiny] [--steps N] [--zero 0-3]
                            [--nproc N] [--run DIR] [--corpus GLOB] [--save-every N]
                            [--log-every N] [key=value ...]

Stages (each reused when its inputs did not change, see ``pretrain.stages``):
  1. clean    the Beam pipeline over the corpus          -> data.clean_dir
  2. vocab    the word+character vocabulary and tokenizer -> tokenizer.dir
  3. pairs    (T5-PEGASUS) pseudo-summary pairs, on Beam   -> data.pairs_dir
  4. train    ``pretrain.train`` in 1 process, or NPROC under torchrun
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from pretrain.config import MODELS, ConfigError, RunConfig, config_path, load_config, preset_names

log = logging.getLogger("pretrain")


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_data(cfg: RunConfig, workers: int) -> None:
    """Run the clean / vocab / pairs stages that are stale."""
    from pretrain.stages import code_signature, corpus_files, file_sha, files_signature, run_stage

    d, tk = cfg.data, cfg.tokenizer
    files = corpus_files(d.corpus)
    if not d.corpus.startswith("hf:") and not files:
        raise ConfigError(f"CORPUS '{d.corpus}' matches no file")

    def clean():
        from pipeline.run import run_pipeline
        output = {"valid_fraction": d.valid_fraction, **({"num_shards": d.num_shards} if d.num_shards else {})}
        run_pipeline(d.corpus, d.clean_dir, config_path=d.pipeline_config, runner="DirectRunner",
                     workers=workers, overrides={"output": output})

    run_stage("clean", d.clean_dir, {
        "corpus": d.corpus, "files": files_signature(files), "valid_fraction": d.valid_fraction,
        "num_shards": d.num_shards, "pipeline_config": file_sha(d.pipeline_config),
        "code": code_signature("pipeline/*.py"),
    }, clean)
    manifest = file_sha(os.path.join(d.clean_dir, "manifest.json"))

    def vocab():
        from tokenizer.build import build_tokenizer
        build_tokenizer(d.clean_dir, tk.dir, vocab_size=tk.vocab_size, algo=tk.algo,
                        min_char_freq=tk.min_char_freq, min_word_freq=tk.min_word_freq)

    run_stage("vocab", tk.dir, {
        "data": manifest, "vocab_size": tk.vocab_size, "algo": tk.algo, "min_char_freq": tk.min_char_freq,
        "min_word_freq": tk.min_word_freq, "code": code_signature("tokenizer/*.py"),
    }, vocab)

    if cfg.model == "t5-pegasus":
        p = cfg.pairs

        def pairs():
            from pipeline.pairs import build_pairs
            build_pairs(d.clean_dir, d.pairs_dir, runner="DirectRunner", workers=workers, ratio=p.ratio,
                        max_source_chars=p.max_source_chars, max_target_chars=p.max_target_chars,
                        min_sentences=p.min_sentences)

        run_stage("pairs", d.pairs_dir, {
            "data": manifest, "ratio": p.ratio, "max_source_chars": p.max_source_chars,
            "max_target_chars": p.max_target_chars, "min_sentences": p.min_sentences,
            "code": code_signature("pipeline/pairs.py", "pipeline/sentences.py", "pipeline/lcs.py"),
        }, pairs)


def train_command(cfg_file: str, size: str, overrides: list[str], nproc: int) -> list[str]:
    args = ["-m", "pretrain.train", "--config", cfg_file, "--size", size, *overrides]
    if nproc <= 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", default="")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--zero", type=int, default=None)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--run", default="")
    parser.add_argument("--corpus", default="")
    parser.add_argument("--save-every", type=int, default=None)
    parser.add_argument("--log-every", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="Beam DirectRunner worker processes")
    parser.add_argument("--prepare-only", action="store_true", help="run the data stages, not training")
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)

    if args.model not in MODELS:
        return fail(f"unknown MODEL '{args.model}' (valid: {'|'.join(MODELS)})")
    from pretrain.objectives import NotYetAvailable, get_objective_class
    try:
        get_objective_class(args.model)
    except NotYetAvailable as exc:
        return fail(str(exc))
    cfg_file = str(config_path(args.model))
    size = args.size or "tiny"
    if size not in preset_names(cfg_file):
        return fail(f"unknown SIZE '{size}' for MODEL={args.model} (valid: {'|'.join(preset_names(cfg_file))})")

    overrides = list(args.overrides)
    for flag, key in ((args.steps, "train.steps"), (args.zero, "train.zero_stage"), (args.run, "run_dir"),
                      (args.corpus, "data.corpus"), (args.save_every, "train.save_every"),
                      (args.log_every, "train.log_every")):
        if flag not in (None, ""):
            overrides.append(f"{key}={flag}")
    if args.nproc < 1:
        return fail(f"NPROC must be >= 1, got {args.nproc}")
    try:
        cfg = load_config(cfg_file, overrides, size=size)
        overrides.append(f"run_dir={cfg.run_dir}")
        t0 = time.perf_counter()
        prepare_data(cfg, args.workers)
        log.info("data stages ready in %.1f s", time.perf_counter() - t0)
    except ConfigError as exc:
        return fail(str(exc))
    if args.prepare_only:
        return 0
    cmd = train_command(cfg_file, size, overrides, args.nproc)
    log.info("launching: %s", " ".join(cmd))
    return run_forwarding_signals(cmd)


def run_forwarding_signals(cmd: list[str]) -> int:
    """Run the trainer so that no way of stopping `make pretrain` leaves it running orphaned.

    The trainer stays in make's process group, so `kill -9 -PGID` and Ctrl-C reach it
    directly. `kill -TERM <make's pid>` reaches only make: the kernel then sends us
    SIGTERM (PR_SET_PDEATHSIG) and we pass it on, so the trainer checkpoints and exits.
    Should this process itself be killed, the trainer gets SIGTERM the same way.
    """
    _die_with_parent()
    child = subprocess.Popen(cmd, preexec_fn=_die_with_parent)

    def forward(signum, frame):
        if signum != signal.SIGINT:      # Ctrl-C already reached the whole process group
            try:
                child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            return child.wait()
        except InterruptedError:
            continue


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when our parent process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
