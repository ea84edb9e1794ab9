"""What ``make pretrain`` runs: data and tokenizer stages if stale, then DeepSpeed training.

  python -m pretrain.launch --model t5-pegasus [--size tiny] [--steps N] [--zero 0-3]
                            [--nproc N] [--run DIR] [--corpus GLOB] [--save-every N]
                            [--log-every N] [key=value ...]

Stages (each reused when its inputs did not change, see ``pretrain.stages``):
  1. clean    the Beam pipeline over the corpus          -> data/stages/clean-<fingerprint>
  2. vocab    the word+character vocabulary and tokenizer -> artifacts/tokenizer-<fingerprint>
  3. pairs    (objectives whose spec.data is "pairs") pseudo-summary pairs -> data/stages/pairs-<fingerprint>
  4. tokens   (data.tokens) token shards of the objective's data    -> data/stages/tokens-<fingerprint>
     (with data.mix, 3 and 4 for each mixed corpus)
  5. train    ``pretrain.train`` in 1 process, or NPROC under torchrun

An existing RUN is checked first: a different corpus, size, vocabulary or model, or a
RUN another training holds, stops with one line before any work.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pretrain.config import ConfigError, RunConfig, config_path, load_config, models, preset_names

log = logging.getLogger("pretrain")

# The data stages run Beam in this process (gRPC threads); the trainer is then forked. gRPC's fork
# handlers are not needed by the child and log "skipping fork() handlers" on every launch.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _top_rejects(stats: dict, n: int = 3) -> str:
    rejected = sorted((stats.get("rejected") or {}).items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:,}" for k, v in rejected) or "no rejects"


def check_pipeline_settings(cfg: RunConfig) -> None:
    """The clean stage's pipeline config with the run's SET= pairs, and the files its checks read: an
    unknown key, a bad value or a missing file stops the launch before any work (one line), not the
    Beam run later."""
    from pipeline.checks import preflight
    from pipeline.config import load_config as load_pipeline_config
    from pretrain.stages import pipeline_overrides

    preflight(load_pipeline_config(cfg.data.pipeline_config, pipeline_overrides(cfg.data)))


def prepare_data(cfg: RunConfig, workers: int) -> None:
    """Run the clean / vocab / objective-data stages that are stale (cfg's folders are resolved)."""
    from pretrain.stages import corpus_files, corpus_specs, data_dir, plan, run_stage

    d, tk, p = cfg.data, cfg.tokenizer, cfg.pairs
    stages = plan(cfg).stages
    if not d.corpus.startswith("hf:"):
        for spec in corpus_specs(d.corpus):      # each comma-separated part must name something
            if not corpus_files(spec):
                raise ConfigError(f"CORPUS '{d.corpus}': '{spec}' matches no file" if spec != d.corpus
                                  else f"CORPUS '{d.corpus}' matches no file")
        if not stages["clean"][1]["files"]:
            raise ConfigError(f"CORPUS '{d.corpus}' matches no file")

    def clean():
        from pipeline.run import run_pipeline
        from pretrain.stages import pipeline_overrides
        if d.pipeline_set:
            log.info("clean: pipeline settings %s (SET)", " ".join(d.pipeline_set))
        stats = run_pipeline(corpus_specs(d.corpus), d.clean_dir, config_path=d.pipeline_config, runner="DirectRunner",
                             workers=workers, overrides=pipeline_overrides(d))
        if not stats.get("written"):
            raise ConfigError(f"CORPUS '{d.corpus}': the cleaning stage wrote 0 documents of {stats.get('read', 0):,} "
                              f"read ({_top_rejects(stats)}); see {d.clean_dir}/rejects/")

    run_stage("clean", d.clean_dir, stages["clean"][1], clean)

    def vocab():
        from dataclasses import fields

        if tk.recipe != "project":
            from tokenizer.released import build_released_tokenizer
            build_released_tokenizer(tk.vocab_file, tk.recipe, tk.dir)
            return
        from tokenizer.build import build_tokenizer
        from tokenizer.options import VocabOptions
        build_tokenizer(d.clean_dir, tk.dir, **{f.name: getattr(tk, f.name) for f in fields(VocabOptions)})

    if not (cfg.init.path and cfg.init.vocab == "keep"):
        run_stage("vocab", tk.dir, stages["vocab"][1], vocab)

    for name, (out_dir, spec) in stages.items():    # objective data, then token shards, of each source
        kind = name.partition(":")[0]
        if kind == "pairs":
            def pairs(src=data_dir(cfg, name), out=str(out_dir)):
                from dataclasses import asdict

                from pipeline.pairs import build_pairs
                build_pairs(src, out, runner="DirectRunner", workers=workers, **asdict(p))

            run_stage(name, out_dir, spec, pairs)
        elif kind == "tokens":
            def tokens(src=data_dir(cfg, name), out=str(out_dir)):
                from pretrain.token_stage import build_tokens
                build_tokens(cfg, src, out, workers=workers)

            run_stage(name, out_dir, spec, tokens)


def train_command(cfg_file: str, size: str, overrides: list[str], nproc: int) -> list[str]:
    args = ["-m", "pretrain.train", "--config", cfg_file, *(["--size", size] if size else []), *overrides]
    if nproc <= 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]


def check_existing_run(cfg: RunConfig) -> None:
    """Refuse, before any work, a RUN trained with other inputs, held by a live training, or saved in a
    layout it cannot resume in (another number of processes or ZeRO stage is fine: pretrain.reshard)."""
    from pretrain import checkpoint as ckpt
    from pretrain.reshard import ReshardError, check_supported
    from pretrain.runinfo import check_identity, identity, run_in_use

    run_dir = Path(cfg.run_dir)
    check_identity(run_dir, identity(cfg))
    holder = run_in_use(run_dir)
    if holder:
        raise ConfigError(f"{run_dir} is in use by a running training ({holder}); wait for it, stop it, "
                          f"or use another RUN")
    tags = ckpt.valid_tags(run_dir / "checkpoints")
    if tags:
        saved = ckpt.saved_layout(run_dir / "checkpoints" / tags[-1])
        try:
            check_supported(saved["zero_stage"], cfg.train.zero_stage, saved.get("optimizer", cfg.train.optimizer),
                            str(run_dir))
        except ReshardError as exc:
            raise ConfigError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="")
    parser.add_argument("--size", default="")
    parser.add_argument("--steps", default="")
    parser.add_argument("--zero", default="")
    parser.add_argument("--nproc", default="1")
    parser.add_argument("--run", default="")
    parser.add_argument("--corpus", default="")
    parser.add_argument("--save-every", default="")
    parser.add_argument("--log-every", default="")
    parser.add_argument("--workers", default="1", help="Beam DirectRunner worker processes")
    parser.add_argument("--text-field", default="", help="corpus text field/column (TEXT_FIELD=)")
    parser.add_argument("--format", default="", help="corpus format (FORMAT=)")
    parser.add_argument("--encoding", default="", help="corpus encoding (ENCODING=)")
    parser.add_argument("--init", default="", help="start from this Hugging Face folder (INIT=)")
    parser.add_argument("--vocab", default="", help="project (default) | keep: the INIT folder's tokenizer (VOCAB=)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one pipeline config key for the clean stage, e.g. --set filters.min_chars=2 "
                             "(may repeat; make pretrain SET='k=v ...')")
    parser.add_argument("--prepare-only", action="store_true", help="run the data stages, not training")
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)

    valid = models()
    if not args.model:
        return fail(f"MODEL is required (valid: {'|'.join(valid)})")
    if args.model not in valid:
        return fail(f"unknown MODEL '{args.model}' (valid: {'|'.join(valid)})")
    cfg_file = str(config_path(args.model))
    size = args.size or "tiny"          # with INIT=, an unset SIZE means the checkpoint's dimensions
    if size not in preset_names(cfg_file):
        return fail(f"unknown SIZE '{size}' for MODEL={args.model} (valid: {'|'.join(preset_names(cfg_file))})")
    ints = {}
    for name in ("steps", "zero", "nproc", "save_every", "log_every", "workers"):
        value = getattr(args, name)
        if value in ("", None):
            continue
        try:
            ints[name] = int(value)
        except ValueError:
            return fail(f"{name.upper().replace('_', '')} must be an integer, got {value!r}")
    nproc = ints.get("nproc", 1)
    if nproc < 1:
        return fail(f"NPROC must be >= 1, got {nproc}")
    overrides = list(args.overrides)
    for value, key in ((ints.get("steps"), "train.steps"), (ints.get("zero"), "train.zero_stage"),
                       (args.run, "run_dir"), (args.corpus, "data.corpus"), (ints.get("save_every"), "train.save_every"),
                       (ints.get("log_every"), "train.log_every"), (args.text_field, "data.text_field"),
                       (args.format, "data.format"), (args.encoding, "data.encoding"), (args.init, "init.path"),
                       (args.vocab, "init.vocab")):
        if value not in (None, ""):
            overrides.append(f"{key}={value}")
    if args.set:        # one YAML list value: the strings reach the config as they are, whatever they hold
        overrides.append(f"data.pipeline_set={json.dumps(args.set, ensure_ascii=False)}")
    try:
        from pretrain.stages import resolve
        cfg = resolve(load_config(cfg_file, overrides, size=args.size or None))
        check_pipeline_settings(cfg)
        check_existing_run(cfg)
        t0 = time.perf_counter()
        prepare_data(cfg, ints.get("workers", 1))
        log.info("data stages ready in %.1f s", time.perf_counter() - t0)
    except ConfigError as exc:
        return fail(str(exc))
    if args.prepare_only:
        return 0
    resolved = [f"run_dir={cfg.run_dir}", f"data.clean_dir={cfg.data.clean_dir}", f"tokenizer.dir={cfg.tokenizer.dir}"]
    resolved += [f"data.{k}={getattr(cfg.data, k)}" for k in ("pairs_dir", "tokens_dir") if getattr(cfg.data, k)]
    keys = {r.partition("=")[0] for r in resolved}
    cmd = train_command(cfg_file, args.size, [o for o in overrides if o.partition("=")[0] not in keys] + resolved, nproc)
    log.info("launching: %s", " ".join(cmd))
    return run_forwarding_signals(cmd)


def run_forwarding_signals(cmd: list[str]) -> int:
    """Run the trainer so that no way of stopping `make pretrain` leaves it running orphaned.

    The trainer stays in make's process group, so `kill -9 -PGID` and Ctrl-C reach it
    directly. `kill -TERM <make's pid>` reaches only make: the kernel then sends us
    SIGTERM (PR_SET_PDEATHSIG) and we pass it on, so the trainer checkpoints and exits.
    Should this process itself be killed, the trainer gets SIGTERM the same way.
    """
    die_with_parent()
    child = subprocess.Popen(cmd, preexec_fn=die_with_parent)

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


def die_with_parent() -> None:
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
