"""Start a run from an existing Hugging Face checkpoint (``make pretrain INIT=PATH``).

Every seed recipe starts from trained weights: T5 PEGASUS from mT5, WoBERT from RoBERTa-wwm,
RoFormer-Sim from a RoFormer masked LM. ``init.path`` names a folder with weights
(safetensors, or ``pytorch_model.bin`` read with ``weights_only=True``), ``config.json`` and a
tokenizer (``tokenizer.json``, ``vocab.txt``, or only SentencePiece's ``spiece.model``).

* The run takes the checkpoint's dimensions (``arch_from_hf``); a SIZE with other
  dimensions is refused (grow it with ``python -m pretrain.grow`` or a ``growth:`` schedule).
* ``init.vocab=project`` (default, the T5 PEGASUS recipe): the project's word+character
  vocabulary; every vocabulary-indexed tensor (input embeddings, T5's untied ``lm_head``, the
  MLM decoder and its bias) is transplanted (``tokenizer.transplant``). ``init.vocab=keep``:
  the checkpoint's own tokenizer and rows.
* A checkpoint the objective cannot use, a missing folder, weights or tokenizer: one line.

The objective maps the checkpoint's parameter names onto its training module
(``Objective.init_state``); ``init_report.json`` in the run records what was loaded,
transplanted and started fresh.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

from pipeline.typed_config import ConfigError

log = logging.getLogger("pretrain")


class InitError(ConfigError):
    """A base checkpoint that cannot be used (one line naming the folder)."""


@dataclass
class InitConfig:
    path: str = ""                          # INIT=: Hugging Face folder to start from ("" = random init)
    generator: str = ""                     # ELECTRA: generator folder ("" = fresh at objective.generator_size)
    vocab: Literal["project", "keep"] = "project"   # VOCAB=keep: the checkpoint's tokenizer
    new_rows: Literal["pieces", "random"] = "pieces"  # new tokens: mean of their old pieces, or random (baseline)


def read_hf_config(folder: str | Path):
    from transformers import AutoConfig

    folder = Path(folder)
    if not folder.is_dir():
        raise InitError(f"INIT {folder}: no such folder")
    if not (folder / "config.json").is_file():
        raise InitError(f"INIT {folder}: not a Hugging Face model folder (no config.json)")
    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise InitError(f"INIT {folder}: config.json cannot be read ({exc})") from None


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder: safetensors (any shards), else ``*.bin`` with ``weights_only=True``."""
    folder = Path(folder)
    st = sorted(folder.glob("*.safetensors"))
    if st:
        from safetensors.torch import load_file
        state = {}
        for f in st:
            state.update(load_file(str(f)))
        return state
    bins = sorted(folder.glob("*.bin"))
    if not bins:
        raise InitError(f"INIT {folder}: no weights (*.safetensors or pytorch_model*.bin)")
    state = {}
    for f in bins:
        try:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as exc:   # a pickle that needs code: refuse rather than execute it
            raise InitError(f"INIT {f}: cannot be read with weights_only=True ({exc.__class__.__name__})") from None
    return state


@lru_cache(maxsize=8)
def read_tokenizer(folder: str):
    """The folder's tokenizer, including SentencePiece-only folders (mT5's spiece.model)."""
    files = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")
    if not any((Path(folder) / f).is_file() for f in files):
        raise InitError(f"INIT {folder}: no usable tokenizer (none of {', '.join(files)})")
    try:
        from tokenizer.loading import load_any_tokenizer
    except ImportError:
        load_any_tokenizer = None
    try:
        if load_any_tokenizer is not None:
            return load_any_tokenizer(folder)
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(folder)
    except Exception as exc:     # transformers raises many kinds here; the user needs one line
        raise InitError(f"INIT {folder}: no usable tokenizer ({exc.__class__.__name__}: {str(exc)[:120]})") from None


def arch_from_hf(config, arch_cls) -> dict:
    """The ``arch:`` fields of a checkpoint's config, for the objective's family."""
    from pretrain.models import EncoderArch, T5Arch

    t = config.model_type
    if arch_cls is T5Arch:
        if t not in ("t5", "mt5", "umt5"):
            raise InitError(f"a T5 objective needs a T5/mT5 checkpoint, got model_type '{t}'")
        proj = getattr(config, "feed_forward_proj", "relu")
        return {"d_model": config.d_model, "d_ff": config.d_ff, "num_layers": config.num_layers,
                "num_decoder_layers": config.num_decoder_layers, "num_heads": config.num_heads, "d_kv": config.d_kv,
                "relative_attention_num_buckets": config.relative_attention_num_buckets,
                "relative_attention_max_distance": getattr(config, "relative_attention_max_distance", 128),
                "feed_forward_proj": proj if proj in ("gated-gelu", "relu", "gelu", "gated-silu") else "gated-gelu"}
    if arch_cls is EncoderArch:
        if t not in ("bert", "roformer", "electra"):
            raise InitError(f"an encoder objective needs a BERT, RoFormer or ELECTRA checkpoint, got model_type '{t}'")
        act = getattr(config, "hidden_act", "gelu")
        return {"d_model": config.hidden_size, "d_ff": config.intermediate_size,
                "num_layers": config.num_hidden_layers, "num_heads": config.num_attention_heads,
                "feed_forward_proj": act if act in ("gelu", "relu") else "gelu"}
    raise InitError(f"no checkpoint mapping for architecture family {arch_cls.__name__}")


def apply_to_config(raw: dict, objective_cls, explicit_size: bool, where: str) -> dict:
    """The run's raw config with the checkpoint's dimensions (``arch:`` and the objective options that
    are dimensions, e.g. ELECTRA's embedding size) and, with VOCAB=keep, its tokenizer."""
    init = raw.get("init") or {}
    if not init.get("path"):
        return raw
    config = read_hf_config(init["path"])
    try:
        dims = arch_from_hf(config, objective_cls.spec.arch)
    except InitError as exc:
        raise InitError(f"INIT {init['path']}: {exc} for objective {objective_cls.spec.name}") from None
    arch = dict(raw.get("arch") or {})
    if explicit_size:
        differ = {k: (arch.get(k), v) for k, v in dims.items() if k in arch and arch[k] != v}
        if differ:
            k, (mine, theirs) = next(iter(differ.items()))
            raise InitError(f"{where}: SIZE={raw.get('size')} has arch.{k}={mine} but INIT {init['path']} has {theirs}; "
                            f"leave SIZE unset to train at the checkpoint's dimensions")
    raw = {**raw, "arch": {**arch, **dims},
           "objective": {**(raw.get("objective") or {}), **objective_cls.options_from_hf(config)}}
    if init.get("vocab") == "keep":
        raw["tokenizer"] = {**(raw.get("tokenizer") or {}), "dir": init["path"]}
    return raw


def init_std(config) -> float:
    """The standard deviation a fresh model of this config draws its embedding rows with."""
    if getattr(config, "initializer_range", None):
        return float(config.initializer_range)
    return float(getattr(config, "initializer_factor", 1.0))      # T5: shared ~ N(0, factor)


def transplant_state(state: dict, old_tok, new_tok, new_rows: str = "pieces", seed: int = 0,
                     rows: int | None = None, std: float = 0.02) -> tuple[dict, dict]:
    """Every tensor indexed by the old vocabulary moved to the new one: a vocabulary tensor's first
    dimension is the checkpoint's ``vocab_size`` (``rows``; mT5 pads it: 250,112 rows for 250,100 pieces)."""
    from tokenizer.transplant import apply_plan, plan_transplant

    old_n, new_n = len(old_tok), len(new_tok)
    rows = rows or old_n
    if rows < old_n:
        raise InitError(f"the checkpoint has {rows} vocabulary rows but its tokenizer {old_n} tokens")
    if old_tok.get_vocab() == new_tok.get_vocab():
        return state, {"transplant": "none (same vocabulary)"}
    plan = plan_transplant(old_tok, new_tok)
    gen = torch.Generator().manual_seed(seed)
    out, moved = {}, []
    for name, tensor in state.items():
        if tensor.dim() >= 1 and tensor.shape[0] == rows and _vocab_indexed(name):
            # T5 draws its untied LM head with std factor / sqrt(d_model), its embedding with factor
            head_std = std * tensor.shape[-1] ** -0.5 if "lm_head" in name and tensor.dim() > 1 else std
            out[name] = apply_plan(tensor[:old_n], plan, new_rows, gen, head_std)
            moved.append(name)
        else:
            out[name] = tensor
    report = {"old_vocab_size": old_n, "new_vocab_size": new_n, "rows": plan.counts(), "tensors": moved,
              "examples": {k: v for k, v in plan.examples.items()}, "new_rows": new_rows}
    return out, report


def _vocab_indexed(name: str) -> bool:
    return any(k in name for k in ("embed", "shared", "lm_head", "decoder.weight", "decoder.bias",
                                   "predictions.bias", "word_embeddings"))


def write_report(run_dir: Path, report: dict) -> None:
    import os
    if int(os.environ.get("RANK", "0")) != 0:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "init_report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")


def map_prefixes(state: dict, rules: list[tuple[str, str]], drop: tuple[str, ...] = ()) -> dict:
    """Rename keys by the first matching (old prefix, new prefix) rule; keys starting with ``drop`` go."""
    out = {}
    for name, tensor in state.items():
        if name.startswith(drop):
            continue
        for old, new in rules:
            if name.startswith(old):
                out[new + name[len(old):]] = tensor
                break
    return out


def held_out_texts(objective, n: int = 200) -> list[str]:
    """Up to n held-out texts of the run (for tokens/char before and after the transplant)."""
    try:
        from pretrain.data import ShardStream, list_shards
        stream = ShardStream(list_shards(objective.valid_dir, "valid"), shuffle=False, loop=False)
        return [r.get("text") or r.get("source", "") for _, r in zip(range(n), stream)]
    except Exception:            # no valid split yet: the report just lacks the figure
        return []


def load_into(objective, model: torch.nn.Module) -> torch.nn.Module:
    """Load ``objective.cfg.init`` into ``model`` (see the module docstring); returns the model."""
    from tokenizer.transplant import tokens_per_char

    init = objective.cfg.init
    config = read_hf_config(init.path)
    state = read_weights(init.path)
    report = {"base": str(Path(init.path).resolve()), "model_type": config.model_type,
              "architectures": getattr(config, "architectures", None), "vocab": init.vocab}
    if init.vocab == "project":
        old_tok = read_tokenizer(str(init.path))
        state, report["transplant"] = transplant_state(state, old_tok, objective.tokenizer, init.new_rows,
                                                       objective.cfg.train.seed, config.vocab_size, init_std(config))
        texts = held_out_texts(objective)
        if texts:
            report["tokens_per_char"] = {"before": round(tokens_per_char(old_tok, texts), 4),
                                         "after": round(tokens_per_char(objective.tokenizer, texts), 4),
                                         "texts": len(texts)}
    mapped = objective.init_state(state, config)
    own = model.state_dict()
    for name, tensor in mapped.items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise InitError(f"INIT {init.path}: {name} has shape {tuple(tensor.shape)}, the model expects "
                            f"{tuple(own[name].shape)}")
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    loaded = [k for k in mapped if k in own]
    if not loaded:
        raise InitError(f"INIT {init.path}: none of its {len(state)} tensors fits a {objective.spec.name} model "
                        f"(model_type '{config.model_type}')")
    tied = {n for names in _tied_groups(model) for n in names if set(names) & set(loaded)}
    report["loaded_tensors"] = len(loaded)
    report["fresh_tensors"] = sorted(k for k in missing if k not in tied)
    report["ignored_tensors"] = sorted(unexpected)
    write_report(Path(objective.cfg.run_dir), report)
    t = report.get("transplant", {})
    log.info("initialized from %s (%s): %d tensors loaded, %d fresh; vocabulary %s%s", init.path,
             config.model_type, len(loaded), len(report["fresh_tensors"]), init.vocab,
             f" ({t['old_vocab_size']} -> {t['new_vocab_size']} rows: {t['rows']})" if "rows" in t else "")
    return model


def _tied_groups(model) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return list(groups.values())
