"""What to tell a user whose corpus came out empty or mostly rejected.

Pure functions of the reject counts and the detected :class:`Layout`s, so
the driver (a run that wrote nothing) and the readers (a file with a high
reject share) give the same one-line advice, e.g.
``missing_text 19,753; fields found: label, review; try TEXT_FIELD=review (--text-field review)``.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

FIELD_REASONS = ("missing_text", "not_an_object", "no_records")
ENCODING_REASONS = ("invalid_utf8", "invalid_encoding")
FORMAT_REASONS = ("broken_json", "broken_csv", "runaway_field", "broken_xml", "binary_data")
DAMAGE_REASONS = ("truncated_file", "unreadable_file", "record_too_large")
_FLAGS = {"text": ("TEXT_FIELD", "--text-field"), "encoding": ("ENCODING", "--encoding"), "format": ("FORMAT", "--format")}


def top_reasons(rejected: dict, n: int = 3) -> str:
    """``missing_text 19,753, too_short 12`` (largest first)."""
    ranked = sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{reason} {count:,}" for reason, count in ranked)


def try_setting(key: str, value: str) -> str:
    make, flag = _FLAGS[key]
    return f"try {make}={value} ({flag} {value})"


def _fields(layouts: Sequence) -> list[str]:
    seen: dict = {}
    for layout in layouts:
        for name in layout.fields:
            seen.setdefault(name, None)
    return list(seen)


def _differs(layouts: Sequence, attr: str) -> Optional[str]:
    """The auto-detected value of ``attr`` where it differs from the one used."""
    for layout in layouts:
        suggested = getattr(layout, f"suggested_{attr}")
        if suggested and suggested != getattr(layout, attr):
            return suggested
    return None


def reject_hint(reason: str, layouts: Sequence, extra_fields: Iterable[str] = ()) -> str:
    """The advice for the commonest reject ``reason`` of files read with
    ``layouts``; ``extra_fields`` are field names seen in rejected records."""
    fields = _fields(layouts)
    for name in extra_fields:
        if name not in fields:
            fields.append(name)
    found = f"fields found: {', '.join(fields[:12])}" if fields else "no fields found"
    if reason in FIELD_REASONS:
        text = _differs(layouts, "text")
        return f"{found}; " + (try_setting("text", text) if text else "set TEXT_FIELD (--text-field) to the field with the text")
    if reason in ENCODING_REASONS:
        used = ", ".join(sorted({lt.encoding for lt in layouts})) or "utf-8"
        enc = _differs(layouts, "encoding")
        return f"read as {used}; " + (try_setting("encoding", enc) if enc else "set ENCODING (--encoding) to the file's encoding, e.g. gb18030")
    if reason in FORMAT_REASONS:
        fmt = _differs(layouts, "format")
        used = ", ".join(sorted({lt.format for lt in layouts}))
        return f"read as {used}; " + (try_setting("format", fmt) if fmt else f"see rejects/{reason}.jsonl.gz for the lines")
    if reason in DAMAGE_REASONS:
        return f"the input is damaged or too large; see rejects/{reason}.jsonl.gz"
    if reason == "empty_file":
        return "the input files are empty"
    text = _differs(layouts, "text")
    if text:
        return f"{found}; {try_setting('text', text)}"
    key, example = setting_for(reason) or ("filters.KEY", "N")
    return (f"{found}; see rejects/{reason}.jsonl.gz, set TEXT_FIELD if the text is elsewhere, "
            f"or relax {key}: SET='{key}={example}' (--set {key}={example})")


_SETTINGS = {   # reject reason (a trailing _ matches a prefix) -> (the config key that decides it, an example)
    "too_short": ("filters.min_chars", "2"), "too_long": ("filters.max_chars", "1000000"),
    "low_chinese_ratio": ("filters.min_chinese_ratio", "0.1"),
    "too_much_punctuation": ("filters.max_punctuation_ratio", "0.7"),
    "too_many_digits": ("filters.max_digit_ratio", "0.6"), "mojibake": ("filters.max_mojibake_ratio", "0.2"),
    "repeated_lines": ("filters.max_repeated_line_ratio", "0.5"),
    "repeated_ngrams": ("filters.max_repeated_ngram_ratio", "0.7"),
    "lang_": ("langid.languages", "[zh,en]"), "wordlist_": ("wordlists.enabled", "false"),
    "decontam_": ("decontam.action", "flag"),
    "high_perplexity": ("quality.max_perplexity", "null"),
}


def setting_for(reason: str) -> Optional[tuple[str, str]]:
    """(config key, example value) behind a filter or check's reject reason; None for read and
    dedup reasons."""
    if reason.startswith("pii_"):
        return f"pii.{reason[4:]}", "mask"
    for name, setting in _SETTINGS.items():
        if reason == name or (name.endswith("_") and reason.startswith(name)):
            return setting
    return None


def zero_output_message(stats: dict, layouts: Sequence) -> Optional[str]:
    """One line for a run that wrote no document (None when it wrote some)."""
    if stats.get("written", 0) > 0:
        return None
    rejected = dict(stats.get("rejected", {}))
    if not rejected:
        return f"0 documents written from {stats.get('read', 0):,} records"
    top = max(rejected, key=lambda r: (rejected[r], r))
    return (f"0 documents written from {stats.get('read', 0):,} records: {top_reasons(rejected)}; "
            f"{reject_hint(top, layouts)}")


def high_reject_message(stats: dict, layouts: Sequence, threshold: float) -> Optional[str]:
    """One line for a run that wrote documents but rejected more than ``threshold`` of what it
    read (duplicates are not rejects), naming the top reasons and the setting behind the first."""
    read, rejected = stats.get("read", 0), dict(stats.get("rejected", {}))
    count = sum(rejected.values())
    if not stats.get("written") or not read or count / read <= threshold:
        return None
    top = max(rejected, key=lambda r: (rejected[r], r))
    return (f"{count:,} of {read:,} records rejected ({count / read:.0%}: {top_reasons(rejected)}); "
            f"{reject_hint(top, layouts)}")


def file_warning(source: str, rejected: dict, total: int, layout, threshold: float,
                 extra_fields: Iterable[str] = ()) -> Optional[str]:
    """One line for a file whose share of rejected records is above ``threshold``."""
    count = sum(rejected.values())
    if not total or not rejected or count / total <= threshold:
        return None
    top = max(rejected, key=lambda r: (rejected[r], r))
    layouts = [layout] if layout is not None else []
    return (f"{source}: {count:,} of {total:,} records rejected ({top_reasons(rejected)}); "
            f"{reject_hint(top, layouts, extra_fields)}")
