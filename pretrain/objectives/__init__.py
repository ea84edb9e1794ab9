"""Objectives: each is a data collator + model + loss that plugs into the one trainer.

An objective class provides:
  ``train_dir`` / ``valid_dir``   where its training records live (a pipeline output folder)
  ``build_model()``               a fresh ``transformers`` model for the configured size
  ``collate(records)``            a batch of tensors from a list of JSON records
  ``loss(model, batch)``          (loss tensor, {term: float}, tokens in batch)
  ``evaluate(model, records)``    extra validation metrics (e.g. ROUGE of generations)
  ``export(state_dict, out_dir)`` a Hugging Face folder that loads with Auto classes
"""
from __future__ import annotations

import importlib

# Registered objectives; an entry of None is an accepted name whose issue has not landed.
REGISTRY = {
    "t5-pegasus": "pretrain.objectives.t5_pegasus:T5PegasusObjective",
    "electra": "pretrain.objectives.electra:ElectraObjective",
    "mlm-proposal": "pretrain.objectives.mlm_proposal:MLMProposalObjective",
    "roformer-sim": "pretrain.objectives.roformer_sim:RoFormerSimObjective",
}


def load_tokenizer(cfg, tokenizer=None, required=("pad", "cls", "sep", "mask")):
    """The run's tokenizer (AutoTokenizer on cfg.tokenizer.dir), checked for the special tokens an objective needs."""
    if tokenizer is None:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer.dir)
    for name in required:
        if getattr(tokenizer, f"{name}_token_id") is None:
            raise ValueError(f"{cfg.tokenizer.dir}: tokenizer has no {name} token")
    return tokenizer


class NotYetAvailable(RuntimeError):
    """An accepted model name whose objective is not implemented yet."""


def get_objective_class(model: str):
    if model not in REGISTRY:
        raise KeyError(f"unknown MODEL '{model}' (valid: {'|'.join(REGISTRY)})")
    target = REGISTRY[model]
    if target is None:
        raise NotYetAvailable(f"MODEL={model} is accepted but not implemented yet; "
                              f"available now: {'|'.join(k for k, v in REGISTRY.items() if v)}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
