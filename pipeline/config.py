"""Pipeline configuration: defaults merged with configs/pipeline.yaml and CLI overrides."""

from __future__ import annotations

import copy
from typing import Any

import yaml

DEFAULTS: dict[str, dict[str, Any]] = {
    "read": {
        "text_field": "auto",
        "id_field": "id",
        "format": "auto",
        "text_unit": "line",
        "max_record_bytes": 10_000_000,
        "max_record_lines": 1000,
        "encoding": "auto",
        "warn_reject_share": 0.2,
    },
    "clean": {
        "strip_html": True,
        "unicode_nfkc": True,
        "keep_cjk_punctuation": True,
        "remove_control": True,
        "urls": "remove",
        "url_replacement": "",
        "emails": "remove",
        "email_replacement": "",
        "mentions": "remove",
        "mention_replacement": "@用户",
        "hashtags": "unwrap",
        "hashtag_replacement": "",
        "emoji": "remove",
        "bracket_emoticons": True,
        "traditional_to_simplified": False,
        "opencc_config": "t2s",
        "collapse_whitespace": True,
        "remove_cjk_spaces": True,
        "split_sentences": False,
        "max_sentence_chars": 256,
    },
    "filters": {
        "min_chars": 10,
        "max_chars": 100_000,
        "min_chinese_ratio": 0.3,
        "max_punctuation_ratio": 0.3,
        "max_digit_ratio": 0.3,
        "max_repeated_line_ratio": 0.3,
        "repeated_ngram_n": 10,
        "max_repeated_ngram_ratio": 0.5,
        "blocklist": None,
        "blocklist_max_hits": 0,
    },
    "dedup": {
        "exact": True,
        "near": True,
        "ngram": 5,
        "num_perm": 128,
        "bands": 16,
        "threshold": 0.8,
        "max_bucket_size": 100,
        "seed": 42,
        "keep": "longest",
    },
    "output": {
        "valid_fraction": 0.02,
        "min_docs_for_valid": 20,
        "num_shards": None,
        "max_docs_per_shard": 100_000,
        "gzip_level": 6,
        "parquet": False,
        "reject_text_chars": 300,
    },
    "beam": {
        "batch_size": 1000,
        "partitions": 16,
    },
}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | None = None, overrides: dict | None = None) -> dict:
    """Defaults ← YAML file (if any) ← ``overrides`` (nested dict)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as f:
            loaded = yaml.safe_load(f.read().decode("utf-8")) or {}
        unknown = set(loaded) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown config section(s) in {path}: {sorted(unknown)}")
        cfg = _merge(cfg, loaded)
    return _merge(cfg, overrides or {})
