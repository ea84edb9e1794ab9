"""CSV/TSV rows from physical lines, losing at most the rows that are broken.

Python's ``csv`` reader over a text stream has two silent failure modes on
real files: one undecodable byte ends the whole file (the decoder raises,
every later row is gone), and an unclosed quote swallows every later row into
one field.  :class:`RowSplitter` feeds ``csv`` one decoded physical line at a
time and watches each record as it grows:

* a line that does not decode rejects only the record it belongs to;
* a quoted field that runs on (more than ``max_lines`` lines or
  ``max_bytes``, or still open at the end of the file, or closed with the
  wrong number of columns, or whose next line looks like the start of a row)
  rejects only the line where it started, and reading resumes on the line
  after it: the swallowed lines are read again as rows.
"""

from __future__ import annotations

import collections
import csv
from typing import Callable, Iterable, Iterator, Optional

from pipeline.detect import is_number
from pipeline.streams import Oversize

SNIPPET_CHARS = 300


class _Stop(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _FirstColumn:
    """What the first cell of a row looks like (its values while there are
    few, or numbers), to recognise a row start inside a runaway field."""

    def __init__(self, max_values: int = 64):
        self.values: set = set()
        self.max_values = max_values
        self.numeric = True
        self.rows = 0

    def add(self, cell: str) -> None:
        self.rows += 1
        self.numeric = self.numeric and is_number(cell)
        if self.values is not None:
            self.values.add(cell)
            if len(self.values) > self.max_values:
                self.values = None

    def matches(self, cell: str) -> bool:
        if self.rows < 2:
            return False
        return (self.values is not None and cell in self.values) or (self.numeric and is_number(cell))


class _Feeder:
    """The line iterator ``csv.reader`` pulls from: decodes each line, keeps
    the lines of the record being read, and raises :class:`_Stop` when that
    record goes wrong.  Lines given back with ``refeed`` are read again."""

    def __init__(self, lines: Iterable, decode: Callable, max_lines: int, max_bytes: int, row_start: Callable):
        self.source = iter(lines)
        self.pending: collections.deque = collections.deque()
        self.decode = decode
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.row_start = row_start
        self.start()

    def start(self) -> None:
        self.record: list = []   # (line number, raw bytes)
        self.size = 0
        self.eof = False

    def refeed(self, lines: list) -> None:
        self.pending.extendleft(reversed(lines))

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.pending:
            lineno, raw = self.pending.popleft()
        else:
            try:
                lineno, raw = next(self.source)
            except StopIteration:
                self.eof = bool(self.record)
                raise
        self.record.append((lineno, raw))
        if isinstance(raw, Oversize):
            raise _Stop("record_too_large")
        text = self.decode(raw)
        if text is None:
            raise _Stop("decode")
        self.size += len(raw)
        if len(self.record) > 1 and (
            len(self.record) > self.max_lines or self.size > self.max_bytes or self.row_start(text)
        ):
            raise _Stop("runaway_field")
        return text + "\n"


def snippet(record: list, n: int = SNIPPET_CHARS) -> str:
    """The raw lines of a record, decoded leniently, for a reject."""
    parts = [raw[: n * 4].decode("utf-8", errors="replace") for _, raw in record]
    return "\n".join(parts)[:n]


class RowSplitter:
    """Iterates ``("row", line, cells)`` and ``("bad", reason, line, snippet)``
    over numbered raw lines (``(line number, bytes)``, :class:`Oversize` for a
    line over the size limit).  ``ncols`` (set it after reading a header) is the
    column count every row must have; ``decode_error`` names the reject of an
    undecodable record."""

    def __init__(self, lines: Iterable, decode: Callable, delimiter: str, quoting: bool, *,
                 max_lines: int, max_bytes: int, decode_error: str, ncols: Optional[int] = None):
        self.delimiter = delimiter
        self.quoting = csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
        self.ncols = ncols
        self.decode_error = decode_error
        self.first = _FirstColumn()
        self.feeder = _Feeder(lines, decode, max_lines, max_bytes, self._row_start)

    def _reader(self):
        return csv.reader(self.feeder, delimiter=self.delimiter, quoting=self.quoting)

    def _row_start(self, text: str) -> bool:
        """Does this continuation line look like a row of its own?"""
        if not self.ncols or self.ncols < 2 or self.quoting == csv.QUOTE_NONE:
            return False
        try:
            cells = next(csv.reader([text], delimiter=self.delimiter))
        except (csv.Error, StopIteration):
            return False
        return len(cells) == self.ncols and self.first.matches(cells[0])

    def _runaway(self, record: list) -> tuple:
        """Reject the line the runaway field started on; read the rest again."""
        self.feeder.refeed(record[1:])
        return ("bad", "runaway_field", record[0][0], snippet(record[:1]))

    def __iter__(self) -> Iterator[tuple]:
        reader = self._reader()
        while True:
            self.feeder.start()
            try:
                row = next(reader)
            except StopIteration:
                return
            except _Stop as stop:
                record = self.feeder.record
                if stop.reason == "runaway_field":
                    yield self._runaway(record)
                elif stop.reason == "decode":
                    yield ("bad", self.decode_error, record[0][0], snippet(record))
                else:
                    yield ("bad", "record_too_large", record[0][0], snippet(record))
                reader = self._reader()
                continue
            except csv.Error as exc:
                record = self.feeder.record
                yield ("bad", "broken_csv", record[0][0] if record else 0, f"{exc}: {snippet(record)}")
                reader = self._reader()
                continue
            record = self.feeder.record
            multi = len(record) > 1
            if self.feeder.eof and multi:   # a quote still open at the end of the file
                yield self._runaway(record)
                reader = self._reader()
                continue
            if not any(row):
                continue
            if self.ncols is not None and len(row) != self.ncols:
                if multi:
                    yield self._runaway(record)
                    reader = self._reader()
                else:
                    yield ("bad", "broken_csv", record[0][0], self.delimiter.join(row))
                continue
            self.first.add(row[0])
            yield ("row", record[0][0], row)
