"""The data-quality checks after cleaning, as one pass over each batch of documents.

Order: language ID (``lang_<code>``), word lists (``wordlist_<name>``), PII (masked in place,
or ``pii_<type>``), decontamination (``decontam_<set>``, or flagged), quality score
(``high_perplexity`` when a maximum is set). Each check is a pure object from its own module
(``pipeline.langid``, ``pipeline.wordlists``, ``pipeline.pii``, ``pipeline.decontam``,
``pipeline.quality``) built from its config section; ``run_checks`` applies them to a batch of
keyed documents and returns the kept ones, the rejects and the counts per decision, which
``merge_counts`` adds up across batches for stats.json.

Per document the checks also know its language and score, perplexity and bucket, and the eval
sets it shares text with (``action: flag``); ``run_checks`` attaches them to the document as
``fields``, which the shard writer adds to its output record.
"""

from __future__ import annotations

from typing import Any, Optional

from pipeline import decontam, dedup, quality
from pipeline.config import PipelineConfig
from pipeline.decontam import Decontaminator
from pipeline.langid import LanguageIdentifier
from pipeline.pii import PiiMasker
from pipeline.quality import QualityScorer
from pipeline.wordlists import WordlistMatcher


class Checks:
    """The enabled checks of a config, built once per worker (``DoFn.setup``)."""

    def __init__(self, cfg: PipelineConfig):
        self.langid = LanguageIdentifier(cfg.langid) if cfg.langid.enabled else None
        self.wordlists = WordlistMatcher.from_config(cfg.wordlists)
        self.pii = PiiMasker(cfg.pii) if cfg.pii.enabled else None
        self.decontam = Decontaminator(cfg.decontam, simplify=not cfg.clean.traditional_to_simplified,
                                      nfkc=not cfg.clean.unicode_nfkc) \
            if cfg.decontam.enabled else None
        self.quality = QualityScorer(cfg.quality) if cfg.quality.model else None
        self.exact = cfg.dedup.exact
        self.snippet = cfg.output.reject_text_chars


def _add(counts: dict, path: tuple, n: int = 1) -> None:
    for part in path[:-1]:
        counts = counts.setdefault(part, {})
    counts[path[-1]] = counts.get(path[-1], 0) + n


def run_checks(batch: list, checks: Checks) -> tuple[list, list, dict, dict]:
    """Keyed-doc batch [(key, (id, text, source, line))] -> (kept keyed docs, PII masked and
    re-keyed, rejects, counts per decision, {key: record fields})."""
    rejects, counts = [], {}
    survivors = []
    langs: dict[str, int] = {}
    for key, doc in batch:
        doc_id, text, source, line = doc[:4]
        fields: dict[str, Any] = dict(doc[4]) if len(doc) > 4 else {}
        reason: Optional[str] = None
        if checks.langid is not None:
            ok, lang, score = checks.langid.keep(text)
            fields["lang"], fields["lang_score"] = lang, round(score, 3)
            langs[lang] = langs.get(lang, 0) + 1
            if not ok:
                reason = f"lang_{lang}"
        if reason is None and checks.wordlists is not None:
            reason = checks.wordlists.reason(text)
        if reason is None and checks.pii is not None:
            masked, found, reason = checks.pii(text)
            for kind, n in found.items():
                _add(counts, ("pii", kind), n)
            if found:
                _add(counts, ("pii", "documents"))
            if masked != text:
                text = masked
                key = dedup.exact_key(text) if checks.exact else key
        if reason is not None:
            rejects.append((reason, doc_id, source, line, doc[1][:checks.snippet], None))
            continue
        survivors.append((key, (doc_id, text, source, line), fields))
    if langs:
        counts["langid"] = langs
    if checks.decontam is not None and survivors:
        verdicts = checks.decontam.batch([doc[1] for _, doc, _ in survivors])
        rest = []
        for (key, doc, fields), (reason, sets) in zip(survivors, verdicts):
            for name in sets:
                _add(counts, ("decontamination", name))
            if reason is not None:
                rejects.append((reason, doc[0], doc[2], doc[3], doc[1][:checks.snippet], None))
                continue
            if sets:
                fields["contaminated"] = sets
            rest.append((key, doc, fields))
        survivors = rest
    if checks.quality is not None and survivors:
        scores = checks.quality.batch([doc[1] for _, doc, _ in survivors])
        rest, ppls, buckets = [], {}, {}
        for (key, doc, fields), (ppl, bucket, reason) in zip(survivors, scores):
            ppls.setdefault(doc[2], []).append(ppl)
            buckets[doc[2], bucket] = buckets.get((doc[2], bucket), 0) + 1
            if reason is not None:
                rejects.append((reason, doc[0], doc[2], doc[3], doc[1][:checks.snippet], None))
                continue
            fields["ppl"], fields["quality_bucket"] = ppl, bucket
            rest.append((key, doc, fields))
        per_source = counts["quality"] = {}
        for source, values in ppls.items():      # one histogram per source and batch
            per_source[source] = {"buckets": {}, "hist": quality.histogram(values)}
        for (source, bucket), n in buckets.items():
            per_source[source]["buckets"][bucket] = n
        survivors = rest
    # The fields travel with the document (a fifth element) to the shard writer, which adds them to
    # the record: language, score, perplexity bucket, contaminated sets.
    kept = [(key, (*doc, fields) if fields else doc) for key, doc, fields in survivors]
    return kept, rejects, counts, {key: fields for key, _, fields in survivors if fields}


def merge_counts(a: dict, b: dict) -> dict:
    """Counts of two batches added up (nested dicts of ints; lists add element-wise)."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict):
            out[k] = merge_counts(out[k], v)
        elif isinstance(v, list):
            out[k] = [x + y for x, y in zip(out[k], v)]
        else:
            out[k] = out[k] + v
    return out


def preflight(cfg: PipelineConfig) -> None:
    """Every file the enabled checks will read is there (the user's eval sets, word lists, the
    quality model), checked where the run starts: a missing one is a one-line ConfigError, not a
    worker's setup failure that Beam logs with a traceback."""
    from pipeline import corpus, wordlists
    from pipeline.typed_config import ConfigError

    if cfg.decontam.enabled:
        decontam.check_user_sets(cfg.decontam)
    if cfg.wordlists.enabled:
        for spec in cfg.wordlists.lists:
            wordlists.load_terms(spec)
    if cfg.quality.model and not corpus.exists(cfg.quality.model):
        raise ConfigError(f"quality.model: {cfg.quality.model} not found; fit one with python -m pipeline.quality fit")


def describe(cfg: PipelineConfig) -> dict:
    """What the run checks against, for stats.json (cheap: file globs only)."""
    out: dict = {"checks": [name for name in ("langid", "wordlists", "pii", "decontam")
                            if getattr(cfg, name).enabled] + (["quality"] if cfg.quality.model else [])}
    if cfg.decontam.enabled:
        out["decontamination_sets"] = decontam.set_status(cfg.decontam)
    if cfg.quality.model:
        out["quality_model"] = cfg.quality.model
    return out


def stats_section(counts: dict, checks_info: Optional[dict] = None) -> dict:
    """The stats.json keys of the checks: counts per decision, quality distribution per source."""
    out = {k: dict(sorted(v.items())) for k, v in counts.items() if k != "quality"}
    if "quality" in counts:
        out["quality"] = {src: quality.summarize(v["hist"], v["buckets"]) for src, v in sorted(counts["quality"].items())}
    if checks_info:
        out.update(checks_info)
    return out
