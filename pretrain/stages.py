"""Data stages keyed by their inputs: clean corpus, vocabulary, objective data (pairs), token shards.

Each stage's folder is named by a fingerprint of everything it is built from (corpus
files by path/size/mtime, upstream stage, parameters and SET= overrides, the contents of the
eval sets the cleaning decontaminates against, the stage's own code), e.g.
``data/stages/clean-3f2a…``, ``artifacts/tokenizer-9b1c…``. Two models, corpora or
sizes therefore never overwrite each other's artifacts, and a run records which ones it
used (RUN/run.json). A folder named explicitly in the config (``data.clean_dir``,
``tokenizer.dir``, ``data.pairs_dir``, ``data.tokens_dir``) is used as it is, with the same
fingerprint check. Each ``data.mix`` source, a prepared corpus named by the sha256 of its
manifest, gets its own pairs and token stages (``pairs:NAME``, ``tokens:NAME``).

A stage folder is valid only when its ``.stage.json`` carries the current fingerprint
and the checksum of the stage's main output (manifest.json / tokenizer.json), written
last and atomically; a rebuild removes the stamp first. So an interrupted build, or a
``make data`` run into the same folder, is never mistaken for an up-to-date stage.
Concurrent launchers that need the same stage wait for one another (a file lock).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pretrain.config import REPO_ROOT

log = logging.getLogger("pretrain")
STAMP = ".stage.json"
# The files whose checksum proves a stage folder holds what its stamp says.
OUTPUT_OF = {"clean": "manifest.json", "pairs": "manifest.json", "vocab": "vocab.txt", "tokens": "manifest.json"}
# The code each stage runs (a change rebuilds it).
CODE_OF = {"clean": ("pipeline/*.py",),
           "vocab": ("tokenizer/*.py", "pipeline/clean.py"),
           "pairs": ("pipeline/pairs.py", "pipeline/sentences.py", "pipeline/lcs.py", "pipeline/corpus.py"),
           "tokens": ("pretrain/token_shards.py", "pretrain/token_stage.py", "tokenizer/bulk.py", "pipeline/corpus.py",
                      "pipeline/sentences.py")}


def corpus_specs(corpus: str) -> list[str]:
    """The comma-separated parts of a CORPUS value (globs, files, folders), or the one hf: spec."""
    if corpus.startswith("hf:"):
        return [corpus]
    return [p for p in (p.strip() for p in corpus.split(",")) if p]


def corpus_files(corpus: str) -> list[str]:
    """The files a CORPUS spec names (comma-separated globs, files or folders); none for hf: specs."""
    from pipeline.readers import expand_input

    if corpus.startswith("hf:"):
        return []
    paths = []
    for pattern in corpus_specs(corpus):
        try:
            paths += [p for p in expand_input(pattern) if not p.startswith("hf:")]
        except (OSError, ValueError):
            continue
    return sorted(set(paths))


def files_signature(paths: list[str]) -> list:
    return [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths]


def code_signature(*patterns: str) -> str:
    """Hash of the source files that implement a stage (so a code change rebuilds it)."""
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(REPO_ROOT.glob(pattern)):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def file_sha(path: str | Path) -> str:
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def fingerprint(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def read_overrides(d) -> dict:
    """The pipeline's ``read:`` settings a run's data section sets (TEXT_FIELD=, FORMAT=, ENCODING=)."""
    return {k: v for k, v in (("text_field", d.text_field), ("format", d.format), ("encoding", d.encoding)) if v}


def pipeline_overrides(d) -> dict:
    """The clean stage's pipeline overrides: SET= pairs, then the run's own read and output settings
    (TEXT_FIELD=/FORMAT=/ENCODING=, data.valid_fraction, data.num_shards), which SET cannot change:
    the trainer reads the split the run's config names."""
    from pipeline.typed_config import ConfigError, parse_overrides

    over = parse_overrides(list(d.pipeline_set), "SET")
    for section in ("read", "output"):
        if not isinstance(over.setdefault(section, {}), dict):
            raise ConfigError(f"SET: '{section}' is a config section, set one of its keys ({section}.KEY=VALUE)")
    for key in ("valid_fraction", "num_shards"):
        if key in over["output"]:
            raise ConfigError(f"SET: output.{key} is the run's data.{key}; set that instead "
                              f"(ARGS='data.{key}={over['output'][key]}')")
    over["read"].update(read_overrides(d))
    over["output"].update({"valid_fraction": d.valid_fraction, **({"num_shards": d.num_shards} if d.num_shards else {})})
    return over


def eval_sets_signature(d) -> str:
    """What the clean stage's decontamination checks documents against: the eval sets' file contents
    (``pipeline.decontam.index_key``), so a changed or newly present set (``$ZH_SHARED_DATA``) rebuilds
    the cleaned corpus instead of reusing one whose leakage counts are stale. "off" when disabled."""
    from pipeline import decontam
    from pipeline.config import load_config as load_pipeline_config

    c = load_pipeline_config(d.pipeline_config, pipeline_overrides(d)).decontam
    return decontam.index_key(c, decontam.eval_sets(c)) if c.enabled else "off"


@dataclass
class Plan:
    """The stages a run needs: name -> (folder, fingerprint spec)."""
    stages: dict[str, tuple[Path, dict]]

    def fingerprint(self, name: str) -> str | None:
        return fingerprint(self.stages[name][1]) if name in self.stages else None


def plan(cfg) -> Plan:
    """Fingerprint specs and folders of the clean, vocab and (objective data) stages of a run."""
    d, tk, p = cfg.data, cfg.tokenizer, cfg.pairs
    clean = {"corpus": d.corpus, "files": files_signature(corpus_files(d.corpus)), "valid_fraction": d.valid_fraction,
             "num_shards": d.num_shards, "pipeline_config": file_sha(d.pipeline_config), "read": read_overrides(d),
             "code": code_signature(*CODE_OF["clean"])}
    if d.pipeline_set:      # only when set: the folders of runs without it keep their names
        clean["set"] = list(d.pipeline_set)
    clean["eval_sets"] = eval_sets_signature(d)
    fp_clean = fingerprint(clean)
    vocab = {"clean": fp_clean, **{k: v for k, v in dataclasses.asdict(tk).items() if k not in ("dir", "root")},
             "code": code_signature(*CODE_OF["vocab"])}
    if tk.recipe != "project":      # a released vocabulary does not depend on the corpus
        vocab = {"recipe": tk.recipe, "vocab_file": files_signature([tk.vocab_file]) if os.path.isfile(tk.vocab_file)
                 else tk.vocab_file, "code": code_signature(*CODE_OF["vocab"])}
    stages = {"clean": (Path(d.clean_dir) if d.clean_dir else Path(d.stages_dir) / f"clean-{fp_clean[:16]}", clean),
              "vocab": (Path(tk.dir) if tk.dir else Path(tk.root) / f"tokenizer-{fingerprint(vocab)[:16]}", vocab)}
    if cfg.init.path and cfg.init.vocab == "keep":
        # VOCAB=keep: the checkpoint's own tokenizer; there is no vocabulary to build (and the user's
        # folder is never written into).
        stages["vocab"] = (Path(cfg.init.path), {"kept": str(Path(cfg.init.path).resolve()),
                                                 "tokenizer": _tokenizer_signature(cfg.init.path)})
    fp_vocab = fingerprint(stages["vocab"][1])
    spec = cfg.objective_class.spec
    inputs = [("", fp_clean, d.pairs_dir, d.tokens_dir)]
    inputs += [(f":{m.name or Path(m.path).name}", fingerprint({"manifest": file_sha(Path(m.path) / "manifest.json")}),
                m.pairs_dir, m.tokens_dir) for m in d.mix]
    for suffix, fp_data, pairs_dir, tokens_dir in inputs:
        if spec.data == "pairs":
            pairs = {"clean": fp_data, "pairs": dataclasses.asdict(p), "code": code_signature(*CODE_OF["pairs"])}
            fp_data = fingerprint(pairs)
            stages["pairs" + suffix] = (Path(pairs_dir) if pairs_dir else Path(d.stages_dir) / f"pairs-{fp_data[:16]}",
                                        pairs)
        if d.tokens:
            tokens = {"data": fp_data, "vocab": fp_vocab, "kind": spec.tokens,
                      "options": cfg.objective_class.token_options(cfg), "code": code_signature(*CODE_OF["tokens"])}
            stages["tokens" + suffix] = (Path(tokens_dir) if tokens_dir else
                                         Path(d.stages_dir) / f"tokens-{fingerprint(tokens)[:16]}", tokens)
    return Plan(stages)


def _tokenizer_signature(folder: str) -> list:
    names = ("tokenizer.json", "vocab.txt", "spiece.model", "tokenizer_config.json", "special_tokens_map.json")
    return files_signature([str(p) for p in sorted(Path(folder).glob("*")) if p.name in names])


def resolve(cfg):
    """A copy of cfg whose stage folders are filled in (the content-addressed default where empty)."""
    cfg = copy.deepcopy(cfg)
    stages = plan(cfg).stages
    cfg.data.clean_dir = str(stages["clean"][0])
    cfg.tokenizer.dir = str(stages["vocab"][0])
    if "pairs" in stages:
        cfg.data.pairs_dir = str(stages["pairs"][0])
    if "tokens" in stages:
        cfg.data.tokens_dir = str(stages["tokens"][0])
    for m in cfg.data.mix:
        name = m.name or Path(m.path).name
        m.pairs_dir = str(stages[f"pairs:{name}"][0]) if f"pairs:{name}" in stages else m.pairs_dir
        m.tokens_dir = str(stages[f"tokens:{name}"][0]) if f"tokens:{name}" in stages else m.tokens_dir
    return cfg


def data_dir(cfg, stage: str) -> str:
    """The folder a pairs or tokens stage reads: for a mix source (``stage:NAME``) its corpus or pairs."""
    kind, _, name = stage.partition(":")
    pairs = kind == "tokens" and cfg.objective_class.spec.data == "pairs"
    if not name:
        return cfg.data.pairs_dir if pairs else cfg.data.clean_dir
    m = next(m for m in cfg.data.mix if (m.name or Path(m.path).name) == name)
    return m.pairs_dir if pairs else m.path


def is_current(name: str, out_dir: Path, fp: str) -> bool:
    """The folder holds this fingerprint's output (stamp and output checksum agree)."""
    try:
        stamp = json.loads((out_dir / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp.get("fingerprint") == fp and stamp.get("output_sha256") == file_sha(out_dir / output_of(name))


def output_of(name: str) -> str:
    """The file whose checksum proves a stage is complete (``tokens:NAME`` is a ``tokens`` stage)."""
    return OUTPUT_OF[name.partition(":")[0]]


def run_stage(name: str, out_dir: str | Path, spec: dict, build: Callable[[], object]) -> bool:
    """Build out_dir unless it is current for spec; return True if it was built."""
    import fcntl

    out_dir = Path(out_dir)
    fp = fingerprint(spec)
    if is_current(name, out_dir, fp):
        log.info("%s: up to date, reusing %s", name, out_dir)
        return False
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.with_name(out_dir.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another process is building %s; waiting for it", name, out_dir)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if is_current(name, out_dir, fp):
            log.info("%s: up to date, reusing %s", name, out_dir)
            return False
        log.info("%s: building %s", name, out_dir)
        (out_dir / STAMP).unlink(missing_ok=True)
        build()
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / (STAMP + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": fp, "output_sha256": file_sha(out_dir / output_of(name)),
                                   "spec": spec}, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
        os.replace(tmp, out_dir / STAMP)
    return True
