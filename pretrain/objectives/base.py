"""What an objective is: a declared spec plus the methods the one trainer calls.

An objective module defines one ``Objective`` subclass with a ``spec``; that module (and
its YAML) is the only place that knows about the objective. The trainer, launcher,
release, SLURM submission and evaluation read everything they need from the spec, like
torchtitan's ``TrainSpec``:

========================  ==============================================================
``spec.name``             what a YAML's ``objective.name`` says (default: its ``model``)
``spec.options``          dataclass of the ``objective:`` section (validated at load)
``spec.arch``             architecture family: dataclass of the ``arch:`` section
``spec.data``             records it trains on: ``clean`` (cleaned documents) or
                          ``pairs`` (pseudo-summary pairs, ``pipeline.pairs``)
``spec.tokens``           record kind of its token shards (``data.tokens``, ``pretrain.token_shards``):
                          ``docs`` (documents packed into rows), ``pairs`` (source/target),
                          ``sentences`` (a document's sentences, or a labeled pair)
``spec.eval_tasks``       ``pretrain.evaluate`` tasks for ``make release``'s model card
``spec.finetune_suite``   ``make eval``'s downstream fine-tuning tasks
``spec.intended_use``     the model card's intended-use paragraph
``spec.required_tokens``  special tokens the tokenizer must have
========================  ==============================================================

Methods (``self.cfg`` is the run's RunConfig, ``self.opts`` its typed ``objective:`` section):

``build_model()``              a fresh module (``transformers`` models inside)
``collate(records)``           a batch of tensors from a list of JSON records
``loss(model, batch)``         ``(loss tensor, {term: float})``
``tokens_in(batch)``           text tokens in the batch (padding excluded), for tokens/s
``train_flops(model, batch)``  training FLOPs of the batch (default 6 x parameters x tokens)
``evaluate(model, records)``   extra validation metrics (e.g. ROUGE of generations)
``hf_parts(model)``            ``{subfolder: PreTrainedModel}`` that ``export`` writes
``export(model, out_dir)``     the Hugging Face folder(s) of a trained module
``check(cfg, where)``          cross-section checks at config load (classmethod)
``init_state(state, config)``  a base checkpoint's tensors under this module's parameter names
``initial_model()``            the model a fresh run starts from: ``build_model()``, loaded from
                               ``init.path`` when the run starts from a checkpoint (``pretrain.init``)
``probe_model(model)``         the Hugging Face model a training-time probe reads features from

The token path (``data.tokens``) adds three, so a record is tokenized once, offline:

``token_options(cfg)``         options that change the token shards besides kind and vocabulary
``encode_records(records, encoder)``  token arrays (``Encoded``) of text records, or a reject reason
``collate_tokens(samples, seed)``  a batch from token samples; its randomness comes from ``seed``,
                               which the loader derives from the samples' global position, so
                               background workers draw exactly what a resumed run draws
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from pipeline.typed_config import ConfigError
from pretrain.token_shards import Encoded


@dataclass
class Options:
    """Base of every ``objective:`` section: ``name`` picks the objective (default: the YAML's model)."""
    name: str = ""


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    arch: type
    options: type = Options
    data: Literal["clean", "pairs"] = "clean"
    eval_tasks: tuple = ()                  # pretrain.evaluate tasks for the release card
    finetune_suite: tuple = ()              # make eval's default downstream tasks (pretrain/evaluation/tasks.py)
    tokens: Literal["docs", "pairs", "sentences"] = "docs"   # record kind of its token shards
    intended_use: str = "Chinese language modelling research."
    required_tokens: tuple = ("pad", "cls", "sep", "mask")


class Objective:
    spec: ClassVar[ObjectiveSpec]

    def __init__(self, cfg, tokenizer=None):
        self.cfg = cfg
        self.opts = cfg.objective
        self.tokenizer = load_tokenizer(cfg, tokenizer, self.spec.required_tokens)
        data = cfg.data.pairs_dir if self.spec.data == "pairs" else cfg.data.clean_dir
        self.train_dir = self.valid_dir = data

    @classmethod
    def check(cls, cfg, where: str) -> None:
        """Cross-section checks (e.g. sequence length vs position embeddings); raise ConfigError."""

    # -- the trainer's interface ---------------------------------------------
    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def collate(self, records: list[dict]) -> dict:
        raise NotImplementedError

    def loss(self, model, batch: dict):
        raise NotImplementedError

    @staticmethod
    def tokens_in(batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def train_flops(self, model, batch: dict) -> float:
        """6 x matmul parameters x tokens: a model whose every part runs on every token."""
        return 6.0 * matmul_params(model) * self.tokens_in(batch)

    def evaluate(self, model, records: list[dict]) -> dict:
        return {}

    # -- starting from an existing checkpoint (pretrain.init) ------------------
    @classmethod
    def options_from_hf(cls, config) -> dict:
        """``objective:`` options a base checkpoint fixes (dimensions that live there, not in arch)."""
        return {}

    def init_state(self, state: dict, config) -> dict:
        """The base checkpoint's tensors renamed to this objective's module (default: unchanged)."""
        return state

    def initial_model(self) -> torch.nn.Module:
        """``build_model()``; with ``init.path``, loaded from that checkpoint (vocabulary transplanted
        unless ``init.vocab=keep``), and the report written to RUN/init_report.json."""
        model = self.build_model()
        if getattr(self.cfg, "init", None) is None or not self.cfg.init.path:
            return model
        from pretrain.init import load_into
        return load_into(self, model)

    def probe_model(self, model):
        """The Hugging Face model a training-time probe reads features from (the export's main part)."""
        return self.hf_parts(model)[""]
    # -- the token path ----------------------------------------------------------
    @classmethod
    def token_options(cls, cfg) -> dict:
        """What besides the record kind and the vocabulary changes this objective's token shards."""
        return {}

    def window(self) -> int:
        """``docs`` kind: tokens per packed sample (the collator adds [CLS] or the closing [SEP])."""
        return self.cfg.train.max_source_len - 1

    def encode_records(self, records: list[dict], encoder) -> list[Encoded | str]:
        """Each record's token arrays (``docs``: text + [SEP]; ``pairs``: source, target), or why not."""
        kind, sep = self.spec.tokens, self.tokenizer.sep_token_id
        fields = {"docs": ("text",), "pairs": ("source", "target")}.get(kind)
        if fields is None:
            raise NotImplementedError(f"{type(self).__name__} must define encode_records for '{kind}' records")
        ok = [all(isinstance(r.get(f), str) for f in fields) for r in records]
        texts = [r[f] for r, good in zip(records, ok) if good for f in fields]
        if kind == "docs" and self.token_options(self.cfg).get("whole_word"):
            words = iter(encoder.words(texts))

            def make():
                ids, starts = next(words)
                return Encoded([[*ids, sep]], [[*starts, 1]])
        else:
            ids = iter(encoder.encode(texts))

            def make():
                return Encoded([[*next(ids), sep]] if kind == "docs" else [next(ids), next(ids)])
        return [make() if good else "no_text" for good in ok]

    def collate_tokens(self, samples: list[dict], seed: int) -> dict:
        raise NotImplementedError(f"{type(self).__name__} has no token path (data.tokens=false)")

    # -- export ----------------------------------------------------------------
    def hf_parts(self, model) -> dict:
        """{subfolder ('' = the export folder itself): transformers model} of a trained module."""
        raise NotImplementedError

    def export(self, model, out_dir: str | Path) -> None:
        """Write every ``hf_parts`` model as a Hugging Face folder (safetensors) with the tokenizer."""
        for sub, part in self.hf_parts(model).items():
            save_hf(part, self.tokenizer, Path(out_dir) / sub)


# ---------------------------------------------------------------- shared helpers
def load_tokenizer(cfg, tokenizer=None, required=("pad", "cls", "sep", "mask")):
    """The run's tokenizer (AutoTokenizer on cfg.tokenizer.dir), checked for the special tokens an objective needs."""
    if tokenizer is None:
        try:
            from tokenizer.loading import load_any_tokenizer    # also SentencePiece-only folders (mT5)
        except ImportError:
            from transformers import AutoTokenizer
            load_any_tokenizer = AutoTokenizer.from_pretrained
        try:
            tokenizer = load_any_tokenizer(cfg.tokenizer.dir)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{cfg.tokenizer.dir}: cannot load the tokenizer ({str(exc)[:160]})") from None
    for name in required:
        if getattr(tokenizer, f"{name}_token_id") is None:
            raise ConfigError(f"{cfg.tokenizer.dir}: tokenizer has no {name} token")
    # Collators tokenize whole documents and cut or pack them themselves, so transformers' warning
    # that a sequence over model_max_length "will result in indexing errors" is wrong here.
    if isinstance(getattr(tokenizer, "deprecation_warnings", None), dict):
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return tokenizer


def pad_batch(rows: list, pad_id: int, types: list | None = None) -> dict:
    """Right-padded ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` when types are given).

    Rows are id lists or arrays; filled in numpy (one copy per row, not one tensor per row)."""
    width = max(map(len, rows)) if rows else 0
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    token_type_ids = np.zeros((len(rows), width), dtype=np.int64) if types is not None else None
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = r
        attention_mask[i, :len(r)] = 1
        if token_type_ids is not None:
            token_type_ids[i, :len(r)] = types[i]
    out = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if token_type_ids is not None:
        out["token_type_ids"] = torch.from_numpy(token_type_ids)
    return out


def uniform_order(valid: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per row, the positions in a uniformly random order, valid ones first.

    ``order[:, :k]`` is a uniform k-subset of a row's valid positions (k <= its count):
    BERT's masking (of tokens or of whole-word units) and ELECTRA's both draw this way.
    Random numbers are drawn on the CPU so a checkpointed CPU RNG resumes them exactly.
    """
    keys = torch.rand(valid.shape, generator=generator).to(valid.device)
    return keys.masked_fill(~valid, 2.0).argsort(dim=1)


def matmul_params(module: torch.nn.Module, skip: tuple = ()) -> int:
    """Parameters that multiply activations, the N of a "6 x N x tokens" FLOP count: every parameter
    of ``module`` once, except embedding tables that no linear layer shares (a lookup is not a
    matmul; a vocabulary projection tied to the table is) and except the parameters of the ``skip``
    submodules (heads that run on some positions only, which the caller charges there)."""
    linear = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Linear)}
    lookup = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Embedding)} - linear
    skipped = {id(p) for m in skip for p in m.parameters()}
    return sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters()
               if id(p) not in lookup and id(p) not in skipped)


def mask_budget(n: torch.Tensor, prob: float) -> torch.Tensor:
    """round(prob * n) per row, at least 1 where n > 0 (BERT's masking budget)."""
    return torch.where(n > 0, (n.double() * prob).round().long().clamp(min=1), torch.zeros_like(n))


def load_trained_state(model: torch.nn.Module, state: dict) -> torch.nn.Module:
    """Load a trained state dict; a key may be missing only when it is a tied alias of a loaded one.

    Consolidated (ZeRO-3) and deduplicated state dicts hold each shared tensor once, under
    one of its names (T5's encoder/decoder embeddings, ELECTRA's shared embeddings, tied LM heads).
    """
    missing, unexpected = model.load_state_dict(state, strict=False)
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    loaded = set(state)
    alias_ok = {n for names in groups.values() if loaded.intersection(names) for n in names}
    missing = [k for k in missing if k not in alias_ok]
    if missing or unexpected:
        from pretrain.checkpoint import CheckpointError
        raise CheckpointError(f"the saved weights do not match the model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}); was the run's config changed?")
    return model


def save_hf(model, tokenizer, out_dir: str | Path) -> None:
    """One Hugging Face folder: safetensors weights, config (and generation config), tokenizer."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    mark_untied_head(model, out_dir / "config.json")
    tokenizer.save_pretrained(out_dir)


def mark_untied_head(model, config_file: Path) -> None:
    """Write ``tie_word_embeddings: false`` when the saved LM head is its own tensor (mT5 / T5 v1.1).

    transformers 5.x's MT5Config forces the flag to true on load whatever the file says
    (huggingface/transformers#42815) and, finding two different tensors, loads them untied with a
    warning, as for any untied mT5 checkpoint. The file states what the checkpoint holds, so
    readers that honour the flag (transformers 4.x, serving stacks reading config.json) get it right."""
    import json

    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embed is None or head.weight is embed.weight:
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("tie_word_embeddings", True):
        config["tie_word_embeddings"] = False
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
