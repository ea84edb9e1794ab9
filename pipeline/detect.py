"""Layout detection: how to read one file, decided from its first bytes.

``sniff(head, name, cfg)`` returns a :class:`Layout`: the format, the
encoding, where the records are and which field holds the text, plus what
auto-detection would have chosen (for hints when a setting given by the user
turns out wrong).  Everything here is a pure function of the head bytes and
the ``read`` config, so the driver (to log the choices and stop early) and
the workers (to read) always agree.

Rules, in order (each overridden by ``read.format`` / ``read.encoding`` /
``read.text_field``):

* encoding: a BOM; else UTF-8 if the head is (almost entirely) valid UTF-8;
  else charset-normalizer's best guess (GBK/GB2312 widened to GB18030);
* format: the extension (``.jsonl .json .csv .tsv .parquet .xml``), and for
  ``.json``/``.txt``/unknown extensions the content: ``[``/``{`` JSON (lines
  when the first line is a whole object), ``<doc>`` pseudo-XML, lines with the
  same number of tabs TSV, else plain text;
* CSV/TSV header: the first row is a header only when its cells look like
  names (short, not numbers, not sentences) and one is a known name or sits
  over a numeric column;
* text field: the first known name present (text, content, review,
  sentence, …), else the clearly longest string field; inside one big JSON
  object, the field with the most characters at any array level.  If two
  fields are equally plausible the layout carries a ``problem`` and nothing
  is guessed.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import json
import posixpath
import re
from typing import Any, Iterable, Optional

from pipeline import jsonstream, streams

SNIFF_BYTES = 1 << 20
SAMPLE_RECORDS = 200

TEXT_NAMES = (
    "text", "content", "review", "sentence", "article", "body", "paragraphs", "context", "document",
    "passage", "story", "abstract", "comment", "description", "summary", "title",
    "文本", "内容", "正文", "评论", "句子", "文章", "摘要", "标题",
)
OTHER_NAMES = (
    "id", "idx", "label", "labels", "label_id", "label_des", "cat", "category", "class", "score", "rating",
    "url", "name", "author", "date", "time", "source", "tag", "tags", "sentiment", "polarity", "answer",
    "question", "chapter", "标签", "类别", "编号",
)
FORMAT_BY_EXT = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".txt": "text", ".text": "text",
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".xml": "xml",
    ".dat": "auto", ".data": "auto",
}
_BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"), (b"\xfe\xff", "utf-16"), (b"\xff\xfe", "utf-16"),
)
_WIDEN = {"gb2312": "gb18030", "gbk": "gb18030", "big5": "big5hkscs", "cp950": "big5hkscs", "ascii": "utf-8"}
_NUMBER = re.compile(r"\s*[-+]?\d+(?:\.\d+)?%?\s*")
_SENTENCE = re.compile(r"[。，！？；、,.!?;:：]\s*\S")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one file (or archive member) is read, and why."""

    format: str                                  # jsonl | json | csv | tsv | text | xml | parquet | hf
    encoding: str = "utf-8"                      # a Python codec; utf-8-sig = UTF-8 after a BOM
    text: Optional[str] = None                   # field path(s): "a.b", "a,b" = first present
    header: bool = False                         # csv/tsv: first row names the columns
    quoting: bool = True                         # csv/tsv: "..." quotes fields
    record_prefix: str = "item"                  # json: ijson prefix of the records
    fields: tuple = ()                           # field names seen in the sample (for hints)
    why: tuple = ()                              # how each choice was made, for the log
    suggested_text: Optional[str] = None         # what auto-detection would pick
    suggested_encoding: Optional[str] = None
    suggested_format: Optional[str] = None
    problem: Optional[str] = None                # detection could not decide (one line)

    def describe(self) -> str:
        parts = [self.format, self.encoding]
        if self.format in ("csv", "tsv"):
            parts.append("header" if self.header else "no header")
        if self.format == "json" and self.record_prefix not in ("item", ""):
            parts.append(f"records at {self.record_prefix}")
        if self.text:
            parts.append(f"text field {self.text!r}")
        line = ", ".join(parts)
        return f"{line} ({'; '.join(self.why)})" if self.why else line


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def whole_lines(head: bytes) -> bytes:
    """``head`` cut after its last newline (a character cut in half at the end
    confuses every detector); all of it when it has no newline."""
    cut = head.rfind(b"\n")
    return head[: cut + 1] if cut > 0 else head


def _mostly_utf8(data: bytes) -> bool:
    """Valid UTF-8, or valid but for a few bad bytes among many multi-byte
    characters (one corrupt row must not switch a UTF-8 file to GBK)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)  # a cut last character is fine
        return True
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    good = len(text) - len(text.encode("ascii", errors="ignore")) - bad
    return good >= 10 * max(bad, 1)


def detect_encoding(head: bytes) -> tuple[str, str]:
    """(codec, how) for a file starting with ``head``."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec, "BOM"
    from charset_normalizer import from_bytes

    sample = head[:65536]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if max(even, odd) >= 2 * min(even, odd) + 2:   # UTF-16 without a BOM: NULs on one side
        data = head[: len(head) // 2 * 2]           # (a newline is 2 bytes: no cut at lines)
    else:
        data = whole_lines(head)
        if not data or _mostly_utf8(data):
            return "utf-8", "valid UTF-8"
    best = from_bytes(data).best()
    if best is None:
        return "utf-8", "no encoding fits; read as UTF-8"
    codec = best.encoding.replace("_", "-").lower()
    return _WIDEN.get(codec, codec), "detected by charset-normalizer"


def is_utf16_like(codec: str) -> bool:
    """Codecs whose newline is not the single byte 0x0A: read through
    :class:`pipeline.streams.Transcoded`."""
    return codec.replace("_", "-").lower().startswith(("utf-16", "utf-32", "utf16", "utf32"))


# --------------------------------------------------------------------------
# Field choice
# --------------------------------------------------------------------------


def resolve(record: Any, path: str) -> Any:
    """The value at a dotted ``path`` in a record: a literal key first, then
    key by key (a digit is a list index); a list met on the way contributes
    the values of all its elements (a list is returned)."""
    if not path:
        return record
    if isinstance(record, dict):
        if path in record:
            return record[path]
        head, _, rest = path.partition(".")
        return resolve(record[head], rest) if head in record else None
    if isinstance(record, list):
        head, _, rest = path.partition(".")
        if head.isdigit():
            i = int(head)
            return resolve(record[i], rest) if i < len(record) else None
        found = [resolve(x, path) for x in record]
        found = [x for x in found if x is not None]
        return found or None
    return None


def text_of(value: Any) -> Optional[str]:
    """A record value as document text: strings as is, lists of strings
    (at any depth) joined by newlines, numbers as their digits; None when the
    value holds no text (missing, an object, a list of objects, null)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, dict):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        parts = [text_of(v) if not isinstance(v, (int, float)) else None for v in value]
        if not parts or any(p is None for p in parts):
            return None
        return "\n".join(p for p in parts if p)
    return None


def field_names(records: Iterable[Any], limit: int = 30) -> tuple:
    """Field names in order of first appearance (``0, 1, …`` for list records)."""
    seen: dict = {}
    for rec in records:
        keys = rec.keys() if isinstance(rec, dict) else (str(i) for i in range(len(rec))) if isinstance(rec, list) else ()
        for k in keys:
            seen.setdefault(str(k), None)
            if len(seen) >= limit:
                return tuple(seen)
    return tuple(seen)


def _candidates(records: list) -> dict[str, list[str]]:
    """field path -> text values of the records that have text there (top
    level and nested objects, list positions for list records)."""
    out: dict[str, list[str]] = {}

    def walk(value: Any, path: str, depth: int) -> None:
        if isinstance(value, dict) and depth < 3:
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k), depth + 1)
            return
        if isinstance(value, list) and depth == 0:
            for i, v in enumerate(value):
                walk(v, str(i), 1)
            return
        text = text_of(value)
        if path and text is not None and not isinstance(value, (int, float)):
            out.setdefault(path, []).append(text)

    for rec in records:
        walk(rec, "", 0)
    return out


def is_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text))


def choose_text_field(records: list, id_field: Optional[str] = "id") -> tuple[Optional[str], str, Optional[str]]:
    """(field path, how, problem) for the text of ``records`` (dicts or lists):
    a known name present in at least half of them, else the clearly longest
    string field (mean length at least twice the next).  Numeric columns and
    the id field never hold the text."""
    if not records:   # empty or unparsable: the run counts it; nothing to decide
        return "text", "default (no record to look at)", None
    cands = {
        path: values for path, values in _candidates(records).items()
        if path != id_field and len(values) * 2 >= len(records)
        and sum(is_number(v) for v in values) * 2 < len(values)
    }
    lower = {path.lower(): path for path in cands}
    if not cands:   # only keys whose values the sniffed head cut off (or nulls)
        lower = {k.lower(): k for r in records if isinstance(r, dict) for k, v in r.items() if v is None}
    for name in TEXT_NAMES:
        if name in lower:
            return lower[name], "by name", None
    if not cands:
        return None, "", "no field holds text"
    ranked = sorted(cands, key=lambda p: -sum(map(len, cands[p])) / len(cands[p]))
    mean = {p: sum(map(len, cands[p])) / len(cands[p]) for p in ranked}
    if len(ranked) == 1 or mean[ranked[0]] >= 2 * mean[ranked[1]]:
        return ranked[0], "longest string field", None
    shown = ", ".join(f"{p} (mean {mean[p]:.0f} chars)" for p in ranked[:4])
    return None, "", f"two or more fields could hold the text: {shown}"


def choose_json_records(root: Optional[str], samples: dict[str, list], id_field: Optional[str]) -> tuple[str, Optional[str], str, Optional[str]]:
    """(record prefix, text field, how, problem) for a whole-file JSON value.
    A top-level array: its items, text field as for flat records.  One big
    object: the array level and field holding the most characters (SQuAD
    ``data[].paragraphs[].context``), so each record stays small."""
    if root == "array":
        field, how, problem = choose_text_field(samples.get("item", []), id_field)
        items = samples.get("item", [])
        if problem and items and all(isinstance(x, str) for x in items):
            return "item", None, "array of strings", None
        return "item", field, how, problem
    best: tuple = (0, "", None)
    for prefix, records in samples.items():
        for path, values in _candidates([r for r in records if isinstance(r, dict)]).items():
            chars = sum(map(len, values))
            if chars > best[0] and path != id_field:
                best = (chars, prefix, path)
    if best[2] is None:   # e.g. JSON lines whose first record is longer than the head
        field, how, problem = choose_text_field(samples.get("", []), id_field)
        return "", field, how, problem
    return best[1], best[2], "the field with the most text", None


def locate_json_path(samples: dict[str, list], path: str) -> tuple[str, str]:
    """Split a user's dotted path (``data.paragraphs.context``) into the
    deepest array level on it (``data.item.paragraphs.item``) and the field
    inside (``context``); a path that does not start at the root is looked
    up at every array level (``context`` alone works too)."""
    parts = path.split(".")
    prefix, i = "", 0
    while i < len(parts):
        nxt = f"{prefix}.{parts[i]}" if prefix else parts[i]
        if f"{nxt}.item" in samples:
            prefix, i = f"{nxt}.item", i + 1
        elif samples.get(prefix) and any(isinstance(r, dict) and parts[i] in r for r in samples[prefix]):
            break
        else:
            prefix = None
            break
    if prefix is not None and i < len(parts):
        return prefix, ".".join(parts[i:])
    for cand in sorted(samples, key=lambda p: -p.count(".")):
        if any(resolve(r, path) is not None for r in samples[cand] if isinstance(r, dict)):
            return cand, path
    return "item" if "item" in samples else "", path


# --------------------------------------------------------------------------
# Format
# --------------------------------------------------------------------------


def format_of_name(name: str) -> str:
    """Format implied by the extension (after any compression suffix):
    a format name, ``auto`` (decide by content) or ``unknown``."""
    ext = posixpath.splitext(streams.strip_compression(name).lower())[1]
    if streams.archive_kind(name):
        return "archive"
    return FORMAT_BY_EXT.get(ext, "unknown")


def _complete_lines(text: str, limit: int = SAMPLE_RECORDS) -> list[str]:
    lines = text.split("\n")
    if len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut by the end of the head
    return [ln.rstrip("\r") for ln in lines if ln.strip()][:limit]


def _delimited(lines: list[str], delimiter: str) -> bool:
    """Lines that all carry the same number (>= 1) of ``delimiter`` form a table."""
    counts = {ln.count(delimiter) for ln in lines}
    return len(lines) >= 2 and len(counts) == 1 and counts.pop() >= 1


def sniff_format(text: str, name: str, ext_format: str) -> tuple[str, str]:
    """(format, how) from the decoded head for ``.json``/``.txt``/unknown
    extensions; other extensions keep their format."""
    if ext_format in ("csv", "tsv"):
        lines = _complete_lines(text)
        other = "tsv" if ext_format == "csv" else "csv"
        if _delimited(lines, "\t" if other == "tsv" else ",") and not _delimited(lines, "," if other == "tsv" else "\t"):
            return other, f"{'tabs' if other == 'tsv' else 'commas'} on every line"
    if ext_format not in ("json", "text", "auto", "unknown"):
        return ext_format, "by extension"
    body = text.lstrip("\ufeff \t\r\n")
    if ext_format in ("json", "auto", "unknown") and body[:1] in ("[", "{"):
        if body[:1] == "{":
            first = body.split("\n", 1)[0]
            try:
                json.loads(first)
                if "\n" in body.strip():
                    return "jsonl", "one JSON object per line"
            except ValueError:
                pass
        return "json", "one JSON value"
    if ext_format == "json":
        return "jsonl", "by extension"
    if body[:1] == "<" and re.search(r"<doc[\s>]", body[:4096]):
        return "xml", "<doc> records"
    if _delimited(_complete_lines(text), "\t"):
        return "tsv", "same number of tabs on every line"
    return "text", "by extension" if ext_format == "text" else "plain text"


# --------------------------------------------------------------------------
# CSV / TSV
# --------------------------------------------------------------------------


def csv_rows(lines: list[str], delimiter: str, quoting: bool) -> list[list[str]]:
    reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    try:
        return [row for row in reader if any(row)]
    except csv.Error:
        return []


def _name_like(cell: str) -> bool:
    cell = cell.strip()
    return 0 < len(cell) <= 40 and not is_number(cell) and not _SENTENCE.search(cell)


def is_header(rows: list[list[str]]) -> bool:
    """The first row names the columns: every cell looks like a name, and one
    is a known name or sits over a column of numbers."""
    if len(rows) < 2 or not all(_name_like(c) for c in rows[0]):
        return False
    known = {n.lower() for n in TEXT_NAMES + OTHER_NAMES}
    if any(c.strip().lower() in known for c in rows[0]):
        return True
    body = rows[1:]
    for j in range(len(rows[0])):
        column = [r[j] for r in body if j < len(r)]
        if column and all(is_number(v) for v in column):
            return True
    return False


def _tsv_quoting(lines: list[str]) -> bool:
    """TSV fields are quoted only when some field is wrapped in quotes."""
    return any(len(f) >= 2 and f[0] == f[-1] == '"' for ln in lines for f in ln.split("\t"))


# --------------------------------------------------------------------------
# Pseudo-XML (<doc><field>...</field></doc>, e.g. SogouCS)
# --------------------------------------------------------------------------

XML_FIELD = re.compile(r"<([A-Za-z_][\w.-]*)(?:\s[^>]*)?>(.*?)</\1>", re.S)
XML_DOC_START = re.compile(r"^\s*<doc(?:\s[^>]*)?>")
XML_DOC_END = re.compile(r"</doc>\s*$")


def xml_fields(record: str) -> dict[str, str]:
    """The ``<name>value</name>`` fields inside one ``<doc>`` record."""
    body = XML_DOC_END.sub("", XML_DOC_START.sub("", record, count=1))
    return {m.group(1): m.group(2) for m in XML_FIELD.finditer(body)}


def xml_sample(text: str, limit: int = SAMPLE_RECORDS) -> list[dict]:
    docs = re.findall(r"<doc(?:\s[^>]*)?>.*?</doc>", text, re.S)
    return [xml_fields(d) for d in docs[:limit]]


# --------------------------------------------------------------------------
# The layout of one file
# --------------------------------------------------------------------------


def _setting(cfg: dict, key: str) -> Optional[str]:
    value = cfg.get(key)
    return None if value in (None, "", "auto") else value


def sniff(head: bytes, name: str, cfg: dict) -> Layout:
    """The :class:`Layout` for a file (or archive member) called ``name``
    whose first bytes are ``head`` (up to :data:`SNIFF_BYTES`)."""
    why = []
    auto_enc, enc_how = detect_encoding(head)
    encoding = _setting(cfg, "encoding") or auto_enc
    why.append("encoding set" if _setting(cfg, "encoding") else f"encoding {enc_how}")
    data = whole_lines(head)
    try:
        if is_utf16_like(encoding):
            text = data.decode(encoding, errors="replace")
        else:
            text = data.decode("utf-8-sig" if encoding == "utf-8-sig" else encoding, errors="replace")
    except LookupError:
        return Layout("text", encoding, problem=f"unknown encoding {encoding!r}; set ENCODING= (--encoding) to a Python codec")
    text = text[1:] if text.startswith("\ufeff") else text
    ext_format = format_of_name(name)
    auto_fmt, fmt_how = sniff_format(text, name, ext_format)
    fmt = _setting(cfg, "format") or auto_fmt
    why.append("format set" if _setting(cfg, "format") else f"format {fmt_how}")
    base = dict(format=fmt, encoding=encoding, suggested_encoding=auto_enc, suggested_format=auto_fmt)
    id_field = cfg.get("id_field") or None
    user_text = _setting(cfg, "text_field")

    if fmt == "text":
        return Layout(**base, why=tuple(why))
    if fmt in ("csv", "tsv"):
        delimiter = "," if fmt == "csv" else "\t"
        lines = _complete_lines(text)
        quoting = True if fmt == "csv" else _tsv_quoting(lines)
        rows = csv_rows(lines, delimiter, quoting)
        header = is_header(rows)
        columns = [c.strip() for c in rows[0]] if header and rows else [str(i) for i in range(max(map(len, rows), default=0))]
        records = [dict(zip(columns, r)) for r in (rows[1:] if header else rows)]
        why.append("header row" if header else "no header row")
        return _with_text(Layout(**base, header=header, quoting=quoting, fields=tuple(columns)),
                          records, user_text, id_field, why)
    if fmt == "jsonl":
        records = []
        for line in _complete_lines(text):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        if not records:
            _, samples = jsonstream.sample(text.lstrip("\ufeff").encode("utf-8"))
            records = samples.get("", [])
        records = [r for r in records if isinstance(r, dict)]
        return _with_text(Layout(**base, fields=field_names(records)), records, user_text, id_field, why)
    if fmt == "xml":
        records = xml_sample(text)
        return _with_text(Layout(**base, fields=field_names(records)), records, user_text, id_field, why)
    if fmt == "json":
        root, samples = jsonstream.sample(text.lstrip("\ufeff").encode("utf-8"))
        auto_prefix, auto_field, how, problem = choose_json_records(root, samples, id_field)
        if user_text:
            first = user_text.split(",")[0].strip()
            prefix, field = locate_json_path(samples, first) if root == "map" else ("item", first)
            rest = [p.strip() for p in user_text.split(",")[1:]]
            field = ",".join([field, *rest])
            records = samples.get(prefix, [])
            return Layout(**base, record_prefix=prefix, text=field, fields=field_names(records),
                          why=tuple(why + ["text field set"]), suggested_text=_dotted(auto_prefix, auto_field))
        records = samples.get(auto_prefix, [])
        why.append(f"text field {how}" if how else "text field undecided")
        return Layout(**base, record_prefix=auto_prefix, text=auto_field, fields=field_names(records),
                      why=tuple(why), suggested_text=_dotted(auto_prefix, auto_field),
                      problem=_undecided(problem, field_names(records)))
    if fmt == "parquet":
        return Layout(**base, why=tuple(why))
    return Layout(**base, why=tuple(why), problem=f"unknown format {fmt!r}")


def _dotted(prefix: str, field: Optional[str]) -> Optional[str]:
    """``data.item.paragraphs.item`` + ``context`` -> ``data.paragraphs.context``."""
    if field is None:
        return None
    parts = [p for p in prefix.split(".") if p and p != "item"]
    return ".".join(parts + [field])


def _undecided(problem: Optional[str], fields: Iterable[str]) -> Optional[str]:
    """The one-line message for a text field detection could not decide."""
    if not problem:
        return None
    return f"{problem}; fields found: {', '.join(fields) or 'none'}; set TEXT_FIELD= (--text-field) to the one with the text"


def _with_text(layout: Layout, records: list, user_text: Optional[str], id_field: Optional[str], why: list) -> Layout:
    """``layout`` with its text field: the user's, or the detected one."""
    auto, how, problem = choose_text_field(records, id_field)
    if user_text:
        return dataclasses.replace(layout, text=user_text, suggested_text=auto, why=tuple(why + ["text field set"]))
    problem = _undecided(problem, layout.fields)
    why.append(f"text field {how}" if how else "text field undecided")
    return dataclasses.replace(layout, text=auto, suggested_text=auto, problem=problem, why=tuple(why))


def sniff_records(records: list, cfg: dict, fmt: str) -> Layout:
    """Layout for already-parsed rows (Parquet, Hugging Face datasets)."""
    return _with_text(Layout(fmt, fields=field_names(records)), records, _setting(cfg, "text_field"),
                      cfg.get("id_field") or None, [])
