"""Input readers: every record of every input becomes a doc or a counted reject.

Every input record becomes exactly one of
  ``("doc", (id, text, source, line))`` or
  ``("reject", (reason, id, source, line, snippet, None))``,
so malformed input (broken JSON, a bad byte, an unclosed CSV quote, a 50 MB
single line, an empty or truncated file, binary junk, a corrupt archive) is
counted with its file and line and never crashes the pipeline.  Files are
opened through ``apache_beam.io.filesystems.FileSystems``, so the same code
reads local disk, GCS, S3 or HDFS.

How a file is read (format, encoding, header, which field is the text) is
decided per file from its first bytes by :mod:`pipeline.detect`, unless set
with ``read.format`` / ``read.encoding`` / ``read.text_field``:

* JSON lines; a whole-file JSON value (array of objects or of lists, SQuAD
  ``data[].paragraphs[].context``, C3 ``[[paragraphs], questions, id]``),
  streamed record by record (:mod:`pipeline.jsonstream`);
* CSV/TSV with or without a header row (:mod:`pipeline.csvrows`);
* plain text, a document per line or per blank-line separated block;
* pseudo-XML ``<doc><field>…</field></doc>`` (SogouCS);
* Parquet, Hugging Face datasets as ``hf:NAME[:CONFIG][:SPLIT]``;
* any of these gzip/bz2/xz/zstd-compressed, or as members of zip/tar archives.

Ids: the record's ``id_field`` when it has one, else ``<basename>:<line>``
(``<archive basename>/<member>:<line>`` inside archives).  ``line`` is the
physical line where the record starts; for whole-file JSON values and
Parquet it is the record's ordinal number.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import posixpath
import re
from collections import Counter
from typing import Any, Callable, Iterator, NamedTuple, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import csvrows, detect, hints, jsonstream, streams
from pipeline.detect import Layout
from pipeline.streams import Oversize, TruncatedInput, iter_lines, strip_compression  # noqa: F401  (re-exported)
from pipeline.typed_config import ConfigError

log = logging.getLogger("pipeline.read")

SNIPPET_CHARS = 300
_CHUNK = 1 << 20
PLAN_MAX_SOURCES = 1000    # files/members the driver sniffs before the run
PLAN_MAX_MEMBERS = 50      # members per archive the driver sniffs


class InputError(ConfigError):
    """The input cannot be read as given; the message is one line naming the
    file and the setting to change (a ConfigError: the fix is a setting)."""


class Origin(NamedTuple):
    """Where records come from: ``source`` (a path, ``archive/member`` inside
    archives) and the prefix of derived ids."""

    source: str
    prefix: str

    @classmethod
    def of(cls, path: str) -> "Origin":
        return cls(path, posixpath.basename(path.rstrip("/")))

    def member(self, name: str) -> "Origin":
        return Origin(f"{self.source}/{name}", f"{self.prefix}/{name}")

    def id(self, line: int) -> str:
        return f"{self.prefix}:{line}"


# --------------------------------------------------------------------------
# Input expansion: globs, directories, hf: specs
# --------------------------------------------------------------------------


def is_hf_spec(spec: str) -> bool:
    return spec.startswith("hf:")


def _has_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def _is_dir(path: str) -> bool:
    if "://" not in path:
        return os.path.isdir(path)
    return path.endswith("/")


def _usable(path: str) -> bool:
    base = posixpath.basename(path.rstrip("/"))
    return bool(base) and not base.startswith((".", "_"))


def detect_format(path: str) -> str:
    """The format a path's extension implies (``archive``, ``auto`` = decide
    by content, ``unknown`` = not a corpus file when listing a directory)."""
    return detect.format_of_name(path)


def expand_input(spec: str) -> list[str]:
    """Files (sorted) for one glob, file, or directory (recursive, files with
    a known extension only); an ``hf:`` spec is returned unchanged."""
    if is_hf_spec(spec):
        return [spec]
    if not _has_glob(spec) and _is_dir(spec):
        pattern = spec.rstrip("/") + "/**"
        matched = FileSystems.match([pattern])[0].metadata_list
        return sorted(m.path for m in matched if _usable(m.path) and detect_format(m.path) != "unknown")
    matched = FileSystems.match([spec])[0].metadata_list
    if not _has_glob(spec):  # an explicitly named file is read even if hidden
        return sorted(m.path for m in matched)
    return sorted(m.path for m in matched if _usable(m.path) and not _is_dir(m.path))


# --------------------------------------------------------------------------
# Records -> events
# --------------------------------------------------------------------------


def _snippet(raw: Any, n: int = SNIPPET_CHARS) -> str:
    if isinstance(raw, bytes):
        raw = raw[: n * 4].decode("utf-8", errors="replace")
    return str(raw)[:n]


def reject(reason: str, origin: Origin, line: int, raw: Any = "", rid: Optional[str] = None) -> tuple:
    return ("reject", (reason, rid if rid is not None else origin.id(line), origin.source, line, _snippet(raw), None))


def _scalar_id(value: Any) -> Optional[str]:
    if value is None or value == "" or isinstance(value, (dict, list, bool)):
        return None
    return str(value)


def text_paths(text_field: Optional[str]) -> tuple:
    """``"a, b.c"`` -> ``("a", "b.c")``: the paths tried in order."""
    return tuple(p.strip() for p in (text_field or "").split(",") if p.strip())


def record_event(rec: Any, origin: Origin, line: int, paths: tuple, id_field: Optional[str],
                 raw: Any = "", seen_fields: Optional[dict] = None) -> tuple:
    """One ``doc`` or ``reject`` event for a parsed record (JSON object or
    list, CSV row as a dict, XML fields).  ``paths`` (see :func:`text_paths`)
    are dotted paths to the text, the first that holds text wins; a list of
    strings is joined by newlines.  ``seen_fields`` collects the field names
    of records without text, for the hint."""
    if isinstance(rec, dict):
        rid = rec.get(id_field) if id_field in rec else detect.resolve(rec, id_field) if id_field else None
        rid = _scalar_id(rid)
    elif isinstance(rec, list) and paths and paths[0].split(".")[0].isdigit():
        rid = None
    elif isinstance(rec, str) and not paths:   # an array of strings
        return ("doc", (origin.id(line), rec, origin.source, line))
    else:
        return reject("not_an_object", origin, line, raw)
    rid = rid if rid is not None else origin.id(line)
    for path in paths:
        value = rec.get(path) if isinstance(rec, dict) and path in rec else detect.resolve(rec, path)
        text = value if isinstance(value, str) else detect.text_of(value)
        if text is not None:
            return ("doc", (rid, text, origin.source, line))
    if seen_fields is not None and len(seen_fields) < 30:
        for name in detect.field_names([rec]):
            seen_fields.setdefault(name, None)
    return reject("missing_text", origin, line, raw, rid)


def _decoder(encoding: str) -> Callable[[bytes], Optional[str]]:
    def decode(raw: bytes) -> Optional[str]:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            return None
        return text[:-1] if text.endswith("\r") else text

    return decode


def _bad_encoding(encoding: str) -> str:
    return "invalid_utf8" if encoding.replace("-", "").lower() in ("utf8", "utf8sig") else "invalid_encoding"


class _Ctx(NamedTuple):
    """What a format reader needs besides the stream."""

    origin: Origin
    layout: Layout
    encoding: str          # per-line codec (after BOM stripping / transcoding)
    max_bytes: int
    id_field: Optional[str]
    cfg: dict
    seen_fields: dict
    paths: tuple           # text_paths(layout.text)


def json_id(text: str, id_field: Optional[str]) -> Optional[str]:
    """The first ``"<id_field>": value`` in (the start of) a JSON text."""
    if not id_field:
        return None
    m = re.search(rf'"{re.escape(id_field)}"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)', text)
    if not m:
        return None
    try:
        return _scalar_id(json.loads(m.group(1)))
    except ValueError:
        return None


def too_large(origin: Origin, line: int, head: str, rid: Optional[str] = None) -> tuple:
    """A ``record_too_large`` reject keeping the record's first characters."""
    return reject("record_too_large", origin, line, head[: jsonstream.SNIPPET_CHARS], rid)


def _lines(f, ctx: _Ctx, find_id: Optional[Callable[[str], Optional[str]]] = None) -> Iterator[tuple[int, Optional[str], Any]]:
    """(line number, decoded text, reject event) per physical line: text is
    None when the line was rejected (too large, binary, undecodable)."""
    decode = _decoder(ctx.encoding)
    for lineno, raw in iter_lines(f, ctx.max_bytes):
        if isinstance(raw, Oversize):
            head = raw.decode(ctx.encoding, errors="replace")
            yield lineno, None, too_large(ctx.origin, lineno, head, find_id(head) if find_id else None)
        elif b"\x00" in raw:
            yield lineno, None, reject("binary_data", ctx.origin, lineno, raw)
        else:
            line = decode(raw)
            if line is None:
                yield lineno, None, reject(_bad_encoding(ctx.encoding), ctx.origin, lineno, raw)
            else:
                yield lineno, line, None


# --------------------------------------------------------------------------
# Per-format generators
# --------------------------------------------------------------------------


def _read_jsonl(f, ctx: _Ctx) -> Iterator[tuple]:
    for lineno, line, bad in _lines(f, ctx, lambda head: json_id(head, ctx.id_field)):
        if bad is not None:
            yield bad
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            yield reject("broken_json", ctx.origin, lineno, line)
            continue
        yield record_event(obj, ctx.origin, lineno, ctx.paths, ctx.id_field, line, ctx.seen_fields)


def _read_text(f, ctx: _Ctx) -> Iterator[tuple]:
    """A document per line, or per blank-line separated block (line = first line)."""
    blocks = ctx.cfg.get("text_unit", "line") == "block"
    block: list[str] = []
    block_start = 0
    origin = ctx.origin
    for lineno, line, bad in _lines(f, ctx):
        if bad is not None:
            yield bad
            continue
        if not blocks:
            if line.strip():
                yield ("doc", (origin.id(lineno), line, origin.source, lineno))
            continue
        if line.strip():
            if not block:
                block_start = lineno
            block.append(line)
        elif block:
            yield ("doc", (origin.id(block_start), "\n".join(block), origin.source, block_start))
            block = []
    if block:
        yield ("doc", (origin.id(block_start), "\n".join(block), origin.source, block_start))


def _read_json_value(f, ctx: _Ctx) -> Iterator[tuple]:
    """Records of one whole-file JSON value, streamed (line = ordinal)."""
    n = 0
    try:
        for rec in jsonstream.iter_records(f, ctx.layout.record_prefix, ctx.max_bytes, ctx.id_field):
            n += 1
            if rec.too_large:
                yield too_large(ctx.origin, n, rec.snippet(), _scalar_id(rec.found_id))
            else:
                yield record_event(rec.value, ctx.origin, n, ctx.paths, ctx.id_field, rec.snippet(),
                                   ctx.seen_fields)
    except jsonstream.JSONError as exc:
        yield reject("broken_json", ctx.origin, n + 1, f"after record {n}: {exc}".replace("\n", " "))
        return
    if n == 0:
        where = ctx.layout.record_prefix or "the top level"
        yield reject("no_records", ctx.origin, 0, f"no records at {where}")


def _read_delimited(f, ctx: _Ctx) -> Iterator[tuple]:
    """CSV/TSV rows (line = physical line where the row starts)."""
    import csv

    layout = ctx.layout
    csv.field_size_limit(max(ctx.max_bytes, 1 << 17))
    rows = csvrows.RowSplitter(
        iter_lines(f, ctx.max_bytes), _decoder(ctx.encoding), "," if layout.format == "csv" else "\t",
        layout.quoting, max_lines=int(ctx.cfg.get("max_record_lines", 1000)), max_bytes=ctx.max_bytes,
        decode_error=_bad_encoding(ctx.encoding), ncols=None if layout.header else len(layout.fields) or None,
    )
    columns = list(layout.fields)
    for event in rows:
        if event[0] == "bad":
            _, reason, line, snippet = event
            yield reject(reason, ctx.origin, line, snippet)
            continue
        _, line, cells = event
        if layout.header and rows.ncols is None:
            columns = [c.strip() for c in cells]
            rows.ncols = len(columns)
            continue
        yield record_event(dict(zip(columns, cells)), ctx.origin, line, ctx.paths, ctx.id_field,
                           ("," if layout.format == "csv" else "\t").join(cells), ctx.seen_fields)


def _read_xml(f, ctx: _Ctx) -> Iterator[tuple]:
    """``<doc>…</doc>`` records, one field per ``<name>…</name>`` (line = the
    ``<doc>`` line); text outside records other than bare tags is rejected."""
    origin = ctx.origin
    doc: Optional[list] = None
    start = size = 0
    skipping = False
    for lineno, line, bad in _lines(f, ctx):
        if bad is not None:
            if doc is not None:      # the record holding the bad line goes
                yield reject(bad[1][0], origin, start, "\n".join(doc))
                doc, skipping = None, True
            else:
                yield bad
            continue
        if detect.XML_DOC_START.match(line):
            if doc is not None:
                yield reject("broken_xml", origin, start, "\n".join(doc))
            doc, start, size, skipping = [], lineno, 0, False
        elif doc is None:
            if skipping:
                skipping = not detect.XML_DOC_END.search(line)
            elif line.strip() and not _bare_tag(line):
                yield reject("broken_xml", origin, lineno, line)
            continue
        doc.append(line)
        size += len(line)
        if size > ctx.max_bytes:
            yield too_large(origin, start, "\n".join(doc))
            doc, skipping = None, not detect.XML_DOC_END.search(line)
        elif detect.XML_DOC_END.search(line):
            text = "\n".join(doc)
            yield record_event(detect.xml_fields(text), origin, start, ctx.paths, ctx.id_field, text,
                               ctx.seen_fields)
            doc = None
    if doc is not None:
        yield reject("broken_xml", origin, start, "\n".join(doc))


def _bare_tag(line: str) -> bool:
    s = line.strip()
    return s.startswith("<") and s.endswith(">") and s.count("<") == 1


_FORMAT_READERS = {
    "jsonl": _read_jsonl, "json": _read_json_value, "csv": _read_delimited, "tsv": _read_delimited,
    "text": _read_text, "xml": _read_xml,
}


def _read_parquet(path: str, origin: Origin, cfg: dict, state: dict) -> Iterator[tuple]:
    import pyarrow.parquet as pq

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        pf = pq.ParquetFile(f)
        first = next(pf.iter_batches(batch_size=200), None)
        layout = detect.sniff_records(first.to_pylist() if first is not None else [], cfg, "parquet")
        state["layout"] = layout
        if layout.problem:
            yield reject("undecided_layout", origin, 0, layout.problem)
            return
        id_field = cfg.get("id_field") or None
        paths = text_paths(layout.text)
        wanted = {p.split(".")[0] for p in paths} | {id_field or ""}
        columns = [c for c in pf.schema_arrow.names if c in wanted]
        line = 0
        for batch in pf.iter_batches(batch_size=4096, columns=columns or None):
            for row in batch.to_pylist():
                line += 1
                yield record_event(row, origin, line, paths, id_field, json.dumps(row, ensure_ascii=False, default=str),
                                   state["seen_fields"])


def parse_hf_spec(spec: str) -> tuple[str, Optional[str], str]:
    """``hf:NAME[:CONFIG][:SPLIT]`` → (name, config or None, split, default train)."""
    parts = spec[3:].split(":")
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return name, config, split


def _load_hf(spec: str):
    import datasets

    name, config, split = parse_hf_spec(spec)
    if os.path.isdir(name) and (
        os.path.exists(os.path.join(name, "state.json")) or os.path.exists(os.path.join(name, "dataset_dict.json"))
    ):
        ds = datasets.load_from_disk(name)
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    return datasets.load_dataset(name, config, split=split)


def _read_hf(spec: str, cfg: dict, state: dict) -> Iterator[tuple]:
    """Rows of a Hugging Face dataset through ``datasets.load_dataset`` (a
    ``save_to_disk`` folder goes through ``datasets.load_from_disk``)."""
    name, config, split = parse_hf_spec(spec)
    origin = Origin(f"hf:{name}:{config or ''}:{split}", f"{posixpath.basename(name.rstrip('/'))}:{split}")
    ds = _load_hf(spec)
    layout = detect.sniff_records([ds[i] for i in range(min(len(ds), 200))], cfg, "hf")
    state["layout"] = layout
    if layout.problem:
        yield reject("undecided_layout", origin, 0, layout.problem)
        return
    id_field, paths = cfg.get("id_field") or None, text_paths(layout.text)
    for i, row in enumerate(ds, start=1):
        yield record_event(row, origin, i, paths, id_field, seen_fields=state["seen_fields"])


# --------------------------------------------------------------------------
# Files, archives, streams
# --------------------------------------------------------------------------


def _open_raw(path: str):
    return FileSystems.open(path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED)


def _prepare(stream, name: str, cfg: dict) -> tuple[Layout, Any, str]:
    """(layout, stream positioned at the first record, per-line codec)."""
    head = streams.read_head(stream, detect.SNIFF_BYTES)
    layout = detect.sniff(head, name, cfg)
    body = streams.Prepend(head, stream)
    encoding = "utf-8" if layout.encoding in ("utf-8", "utf-8-sig") else layout.encoding
    if encoding == "utf-8" and head.startswith(b"\xef\xbb\xbf"):
        body.read(3)
    if detect.is_utf16_like(encoding) or (layout.format == "json" and encoding != "utf-8"):
        body, encoding = streams.Transcoded(body, encoding), "utf-8"
    return layout, body, encoding


def _read_stream(stream, name: str, origin: Origin, cfg: dict, state: dict) -> Iterator[tuple]:
    layout, body, encoding = _prepare(stream, name, cfg)
    state["layout"] = layout
    if layout.problem:
        yield reject("undecided_layout", origin, 0, layout.problem)
        return
    ctx = _Ctx(origin, layout, encoding, int(cfg.get("max_record_bytes", 10_000_000)),
               cfg.get("id_field") or None, cfg, state["seen_fields"], text_paths(layout.text))
    yield from _FORMAT_READERS[layout.format](body, ctx)


class _StopArchive(Exception):
    """A streamed archive cannot go on after a member was cut short."""


def _guarded(origin: Origin, read: Callable[[dict], Iterator[tuple]], cfg: dict, member: bool = False) -> Iterator[tuple]:
    """The events of ``read(state)`` for one file or archive member, plus one
    reject for how it ended badly (truncated, unreadable) or for an empty
    file; logs a warning with a hint when many of its records were rejected."""
    state: dict = {"seen_fields": {}}
    seen = 0
    last_line = 0
    rejected: Counter = Counter()
    try:
        for event in read(state):
            seen += 1
            last_line = max(last_line, event[1][3])
            if event[0] == "reject":
                rejected[event[1][0]] += 1
            yield event
    except TruncatedInput as exc:
        yield reject("truncated_file", origin, last_line + 1, f"{exc} after line {last_line}")
        if member:
            raise _StopArchive() from exc
        return
    except _StopArchive:
        return
    except Exception as exc:  # corrupt archive, unreadable parquet, I/O error …
        yield reject("unreadable_file", origin, last_line + 1, f"{type(exc).__name__}: {exc}")
        return
    if seen == 0:
        yield reject("empty_file", origin, 0)
        return
    if "layout" not in state:   # an archive: its members were judged one by one
        return
    warning = hints.file_warning(origin.source, rejected, seen, state.get("layout"),
                                 float(cfg.get("warn_reject_share", 0.2)), state["seen_fields"])
    if warning:
        log.warning("%s", warning)


def _read_member(open_member: Callable, name: str, origin: Origin, cfg: dict, state: dict) -> Iterator[tuple]:
    nested = streams.archive_kind(name)
    if nested:
        yield from _read_archive(open_member(), nested, origin, cfg)
    else:
        yield from _read_stream(open_member(), name, origin, cfg, state)


def _read_archive(stream, kind: str, origin: Origin, cfg: dict) -> Iterator[tuple]:
    """Each member read like a file of its own (a tar stream cannot go on
    past a member that was cut short; a zip can)."""
    for name, open_member in streams.members(stream, kind):
        sub = origin.member(name)
        yield from _guarded(sub, functools.partial(_read_member, open_member, name, sub, cfg), cfg, member=kind == "tar")


def _read_file(path: str, origin: Origin, cfg: dict, state: dict) -> Iterator[tuple]:
    with _open_raw(path) as raw:
        stream = streams.decompress(raw, path)
        kind = streams.archive_kind(path)
        if kind:
            yield from _read_archive(stream, kind, origin, cfg)
        else:
            yield from _read_stream(stream, path, origin, cfg, state)


def _is_parquet(path: str, cfg: dict) -> bool:
    fmt = cfg.get("format") or "auto"
    return fmt == "parquet" or (fmt == "auto" and detect_format(path) == "parquet")


def read_source(path: str, cfg: dict) -> Iterator[tuple]:
    """All ``doc``/``reject`` events of one file, archive or ``hf:`` spec."""
    if is_hf_spec(path):
        yield from _guarded(Origin(path, path), functools.partial(_read_hf, path, cfg), cfg)
        return
    origin = Origin.of(path)
    read = _read_parquet if _is_parquet(path, cfg) else _read_file
    yield from _guarded(origin, functools.partial(read, path, origin, cfg), cfg)


# --------------------------------------------------------------------------
# Driver side: decide and log the layouts before the run
# --------------------------------------------------------------------------


def _layouts(path: str, cfg: dict) -> Iterator[tuple[str, Layout]]:
    """(source, layout) for a file, or for the first members of an archive."""
    if is_hf_spec(path):
        ds = _load_hf(path)
        yield path, detect.sniff_records([ds[i] for i in range(min(len(ds), 200))], cfg, "hf")
        return
    if _is_parquet(path, cfg):
        import pyarrow.parquet as pq

        with _open_raw(path) as f:
            first = next(pq.ParquetFile(f).iter_batches(batch_size=200), None)
        yield path, detect.sniff_records(first.to_pylist() if first is not None else [], cfg, "parquet")
        return
    with _open_raw(path) as raw:
        stream = streams.decompress(raw, path)
        kind = streams.archive_kind(path)
        if not kind:
            yield path, detect.sniff(streams.read_head(stream, detect.SNIFF_BYTES), path, cfg)
            return
        for i, (name, open_member) in enumerate(streams.members(stream, kind)):
            if i >= PLAN_MAX_MEMBERS or streams.archive_kind(name):
                break
            yield f"{path}/{name}", detect.sniff(streams.read_head(open_member(), detect.SNIFF_BYTES), name, cfg)


def plan_inputs(paths: list[str], cfg: dict) -> list[tuple[str, Layout]]:
    """Sniff the inputs (the first :data:`PLAN_MAX_SOURCES` files/members),
    log how each kind of file will be read, and raise :class:`InputError`
    (one line) when a layout cannot be decided.  Damaged files are left to
    the run, which counts them as rejects."""
    plans: list[tuple[str, Layout]] = []
    for path in paths:
        if len(plans) >= PLAN_MAX_SOURCES:
            break
        try:
            plans.extend(_layouts(path, cfg))
        except Exception as exc:  # damaged input: the run counts it as a reject
            log.warning("%s: cannot be sniffed (%s: %s); the run will count it", path, type(exc).__name__, exc)
    groups: dict[str, list[str]] = {}
    for source, layout in plans:
        groups.setdefault(layout.describe(), []).append(source)
    for description, sources in groups.items():
        names = ", ".join(posixpath.basename(s) for s in sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
        log.info("reading %s as %s", names, description)
    problems = [(s, lt) for s, lt in plans if lt.problem]
    if problems:
        source, layout = problems[0]
        more = f" (and {len(problems) - 1} more files)" if len(problems) > 1 else ""
        raise InputError(f"{source}: {layout.problem}{more}")
    return plans
