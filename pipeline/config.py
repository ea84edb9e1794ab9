"""Pipeline configuration: one typed dataclass per ``configs/pipeline.yaml`` section.

The field defaults below are the only defaults (the cleaner, filters and the data-quality
steps take these sections, never loose dicts with their own fallbacks). Loading goes through
``pipeline.typed_config``: an unknown key in any section, a wrong type or a value outside a
``Literal[...]`` stops with one line naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from pipeline.typed_config import ConfigError, InvalidValue, build, deep_merge, parse_yaml, to_dict

REPO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "pipeline.yaml"

Policy = Literal["keep", "remove", "replace"]
PiiAction = Literal["mask", "reject", "keep"]


@dataclass
class ReadConfig:
    """README "Input formats"; every choice is logged per file."""
    text_field: str = "auto"           # auto (known names, else the longest string field) | a field path; "a,b" = first present
    id_field: Optional[str] = "id"     # missing id -> "<file basename>:<line>"
    format: str = "auto"               # auto | jsonl | json | text | csv | tsv | xml | parquet
    text_unit: Literal["line", "block"] = "line"
    max_record_bytes: int = 10_000_000
    max_record_lines: int = 1000       # CSV: a quoted field running over more lines is a runaway_field
    encoding: str = "auto"             # auto (BOM, UTF-8, else charset-normalizer) | a codec
    warn_reject_share: float = 0.2     # warn about a file, or a run, with a larger share of rejected records


@dataclass
class CleanConfig:
    strip_html: bool = True
    unicode_nfkc: bool = True
    keep_cjk_punctuation: bool = True
    remove_control: bool = True
    remove_private_use: bool = True    # U+E000-F8FF and planes 15-16: no meaning outside one font
    urls: Policy = "remove"
    url_replacement: str = ""
    emails: Policy = "remove"
    email_replacement: str = ""
    mentions: Policy = "remove"
    mention_replacement: str = "@用户"
    hashtags: Literal["keep", "unwrap", "remove", "replace"] = "unwrap"
    hashtag_replacement: str = ""
    # Fill-in-the-blank markers (chid's #idiom#): never unwrapped into a word by ``hashtags``.
    blank_markers: list[str] = field(default_factory=lambda: ["#idiom#"])
    blank_policy: Policy = "keep"
    blank_replacement: str = "___"
    emoji: Literal["keep", "remove"] = "remove"
    bracket_emoticons: bool = True
    remove_empty_brackets: bool = True  # "干宝（），字令升" -> "干宝，字令升"
    # T5 PEGASUS, WoBERT and BERT-Chinese vocabularies are simplified: one script per corpus
    # keeps words like 头发/頭髮 from splitting their counts and vocabulary slots.
    traditional_to_simplified: bool = True
    opencc_config: Literal["t2s", "tw2s", "hk2s", "tw2sp"] = "t2s"
    collapse_whitespace: bool = True
    remove_cjk_spaces: bool = True
    collapse_doubled: bool = True      # "title + body + body" keeps one body (see clean.collapse_doubled)
    split_sentences: bool = False
    max_sentence_chars: int = 256


@dataclass
class FilterConfig:
    """A threshold set to null switches its filter off."""
    min_chars: Optional[int] = 4                     # bench/length_bench.py: real posts of 4-9 characters
    max_chars: Optional[int] = 100_000
    min_chinese_ratio: Optional[float] = 0.3
    max_punctuation_ratio: Optional[float] = 0.5     # punctuation runs per unit (！！！！ is one run)
    max_digit_ratio: Optional[float] = 0.4           # numbers per word unit (a number is one unit)
    max_mojibake_ratio: Optional[float] = 0.1        # "?"/U+FFFD inside Chinese text
    max_repeated_line_ratio: Optional[float] = 0.3
    repeated_ngram_n: int = 10
    max_repeated_ngram_ratio: Optional[float] = 0.5


@dataclass
class PiiConfig:
    """Per entity type: ``mask`` (replace by ``mask_format``), ``reject`` the document, or ``keep``."""
    enabled: bool = True
    mask_format: str = "<{type}>"
    id_card: PiiAction = "mask"
    bank_card: PiiAction = "mask"
    mobile: PiiAction = "mask"
    landline: PiiAction = "mask"
    credit_code: PiiAction = "mask"
    email: PiiAction = "mask"
    ip: PiiAction = "mask"
    qq: PiiAction = "mask"
    wechat: PiiAction = "mask"


@dataclass
class WordList:
    """One term list: reject when at least ``min_hits`` matches cover more than ``max_ratio``
    of the visible characters. ``path`` null = the built-in list of that name."""
    name: str
    path: Optional[str] = None
    min_hits: int = 3
    max_ratio: float = 0.01


@dataclass
class WordlistConfig:
    enabled: bool = True
    lists: list[WordList] = field(default_factory=lambda: [
        WordList("porn"), WordList("gambling"), WordList("ads"), WordList("spam")])


@dataclass
class LangIdConfig:
    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["zh"])   # kept languages
    min_score: float = 0.5            # reject when no kept language scores this much
    min_chars: int = 20               # shorter texts are kept (too short to judge)


@dataclass
class QualityConfig:
    """Character n-gram perplexity under a model fitted with ``python -m pipeline.quality fit``."""
    model: Optional[str] = None       # null = no quality score
    max_perplexity: Optional[float] = None   # null = score only, no filtering


@dataclass
class EvalSet:
    name: str
    path: str                          # glob; $ZH_SHARED_DATA expands
    format: Literal["tsv", "squad", "lines"] = "tsv"
    columns: list[int] = field(default_factory=lambda: [0, 1])   # tsv: text columns


def project_eval_sets() -> list[EvalSet]:
    root = "$ZH_SHARED_DATA"
    return [
        *(EvalSet(f"sts-{t.lower()}", f"{root}/sts/senteval_cn/{t}/{t}.test.data")
          for t in ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B")),
        EvalSet("csl-test", f"{root}/summarization/csl_benchmark_ts/test.tsv", columns=[1, 2]),
        EvalSet("cmrc2018-dev", f"{root}/corpus/cmrc2018/cmrc2018_dev.json", format="squad"),
    ]


@dataclass
class DecontamConfig:
    enabled: bool = True
    ngram: int = 13                    # characters, after normalization
    action: Literal["reject", "flag"] = "reject"
    project_sets: bool = True          # the sets the project measures on (missing files: noted in stats.json)
    eval_sets: list[EvalSet] = field(default_factory=list)   # user-named sets (missing: error)


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True
    ngram: int = 5
    num_perm: int = 128
    bands: int = 16
    threshold: float = 0.8
    max_bucket_size: int = 100
    seed: int = 42
    keep: Literal["longest", "smallest_id"] = "longest"

    def __post_init__(self):
        if self.num_perm % self.bands:
            raise InvalidValue("num_perm", f"({self.num_perm}) must be a multiple of bands ({self.bands})")


@dataclass
class OutputConfig:
    valid_fraction: float = 0.02
    min_docs_for_valid: int = 20
    num_shards: Optional[int] = None
    max_docs_per_shard: int = 100_000
    gzip_level: int = 6
    parquet: bool = False
    reject_text_chars: int = 300


@dataclass
class BeamConfig:
    batch_size: int = 1000
    partitions: int = 16


@dataclass
class PipelineConfig:
    read: ReadConfig = field(default_factory=ReadConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    wordlists: WordlistConfig = field(default_factory=WordlistConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)


def section(cls, cfg):
    """``cfg`` as the dataclass ``cls``: an instance passes through, a mapping (or None) is
    built strictly, so ``build_cleaner({})`` and ``build_cleaner(CleanConfig())`` agree."""
    if isinstance(cfg, cls):
        return cfg
    name = next((n for n, tp in typing.get_type_hints(PipelineConfig).items() if tp is cls), cls.__name__)
    return build(cls, cfg, "config", f"{name}.")


def load_config(path: str | None = None, overrides: dict | None = None) -> PipelineConfig:
    """Defaults <- YAML file (if any; local or gs://, s3://, hdfs://) <- ``overrides`` (nested dict)."""
    raw: dict = {}
    where = "pipeline config"
    if path:
        from pipeline.corpus import open_read

        where = path
        try:
            with open_read(path) as f:
                text = f.read().decode("utf-8")
        except (OSError, IOError) as exc:   # Beam wraps a missing file in BeamIOError (an IOError)
            raise ConfigError(f"{path}: config file not readable ({type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: config file is not UTF-8") from None
        raw = parse_yaml(text, path)
    return build(PipelineConfig, deep_merge(raw, overrides or {}), where)


def as_dict(section_cfg) -> dict:
    """A config or section as the plain (picklable, JSON-like) mapping the Beam graph, the
    readers and the shard writer take; a mapping passes through as a copy."""
    return to_dict(section_cfg) if dataclasses.is_dataclass(section_cfg) else dict(section_cfg or {})
