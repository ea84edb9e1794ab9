"""The vocabulary builder's settings: one dataclass, one default per key.

``build_tokenizer``, ``python -m tokenizer`` and the pretraining config's ``tokenizer:``
section (``pretrain.config.TokenizerConfig``, which adds where the folder goes) all read
their defaults from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.typed_config import InvalidValue


@dataclass
class VocabOptions:
    vocab_size: int = 50000                 # upper bound; small corpora give fewer tokens
    algo: Literal["wordpiece", "sentencepiece"] = "wordpiece"
    min_char_freq: int = 1                  # keep every character seen: tiny corpora still cover their text
    min_word_freq: int = 2                  # a word seen once is noise
    max_word_len: int = 10
    # No character is lost: common simplified + traditional Han characters are in the vocabulary
    # even when the corpus lacks them, and anything else falls back to its UTF-8 bytes.
    char_coverage: Literal["none", "gb2312", "gb2312+big5"] = "gb2312+big5"
    byte_fallback: bool = True
    lowercase: bool = True                  # T5 PEGASUS lowercases
    user_dict: str = ""                     # extra jieba dictionary ("" = none)
    model_max_length: int = 512

    def __post_init__(self):
        if self.vocab_size <= 0:
            raise InvalidValue("vocab_size", f"must be > 0, got {self.vocab_size}")
