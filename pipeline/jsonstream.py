"""Whole-file JSON values, streamed record by record with ``ijson``.

A 30 MB JSON array is never parsed whole: ijson's events are assembled into
one record at a time (the elements found at an ijson *prefix*: ``item`` for a
top-level array, ``data.item.paragraphs.item`` for SQuAD paragraphs, ``""``
for a file that is one object).  A record larger than ``max_bytes`` stops
being assembled the moment it crosses the limit, so memory stays bounded by
the limit, yet its first characters and its top-level id are still reported.
"""

from __future__ import annotations

import io
import json
from typing import Any, Iterator, Optional

import ijson

SNIPPET_CHARS = 200
_OPEN = {"start_map": "{", "start_array": "["}
_CLOSE = {"end_map": "}", "end_array": "]"}
JSONError = ijson.JSONError


class RecordBuilder:
    """One JSON value from ijson events; ``feed`` returns True when the value
    is complete.  Counts the value's UTF-8 size: past ``max_bytes`` the value
    is dropped (``too_large``) while its events are still consumed, and only
    ``snippet()`` (the record re-serialised, first characters) and
    ``found_id`` (its top-level ``id_field``) are kept."""

    def __init__(self, max_bytes: int, id_field: Optional[str] = None):
        self.max_bytes = max_bytes
        self.id_field = id_field
        self.value: Any = None
        self.size = 0
        self.too_large = False
        self.found_id: Any = None
        self._stack: list = []      # open containers (None once dropped)
        self._keys: list = []       # current key per open container
        self._first: list = []      # per open container: no element yet
        self._after_key = False
        self._id_next = False
        self._snippet: list[str] = []
        self._snippet_len = 0

    @property
    def depth(self) -> int:
        return len(self._keys)

    def snippet(self) -> str:
        return "".join(self._snippet)[:SNIPPET_CHARS]

    def _piece(self, text: str, element: bool) -> None:
        if element and self._first:
            if not self._first[-1]:
                text = ", " + text
            self._first[-1] = False
        if self._snippet_len < SNIPPET_CHARS:
            self._snippet.append(text)
            self._snippet_len += len(text)

    def _add(self, value: Any) -> None:
        if self.too_large:
            return
        if not self._stack:
            self.value = value
        elif isinstance(self._stack[-1], list):
            self._stack[-1].append(value)
        else:
            self._stack[-1][self._keys[-1]] = value

    def feed(self, event: str, value: Any) -> bool:
        after_key, self._after_key = self._after_key, False
        id_next, self._id_next = self._id_next, False
        done = False
        if event == "map_key":
            self._piece(json.dumps(value, ensure_ascii=False) + ": ", element=True)
            self._keys[-1] = value
            if not self.too_large and isinstance(self._stack[-1], dict):
                self._stack[-1][value] = None   # the key shows even if the head cuts its value
            self._after_key = True
            self._id_next = self.depth == 1 and value == self.id_field
            self.size += len(value.encode("utf-8")) + 4
        elif event in _OPEN:
            self._piece(_OPEN[event], element=not after_key)
            container: Any = {} if event == "start_map" else []
            self._add(container)
            self._stack.append(None if self.too_large else container)
            self._keys.append(None)
            self._first.append(True)
            self.size += 2
        elif event in _CLOSE:
            self._piece(_CLOSE[event], element=False)
            self._stack.pop()
            self._keys.pop()
            self._first.pop()
            done = not self._keys
        else:
            text = json.dumps(value, ensure_ascii=False)
            self._piece(text, element=not after_key)
            if id_next and self.found_id is None:
                self.found_id = value
            self.size += len(value.encode("utf-8")) + 2 if isinstance(value, str) else len(text)
            self._add(value)
            done = not self._keys
        if not self.too_large and self.size > self.max_bytes:
            self.too_large = True
            self.value = None
            self._stack = [None] * len(self._stack)
        return done


def iter_records(stream, prefix: str, max_bytes: int, id_field: Optional[str]) -> Iterator[RecordBuilder]:
    """A finished :class:`RecordBuilder` per value found at ``prefix`` of the
    JSON document in ``stream`` (UTF-8 bytes), in document order.  Several
    top-level values (JSON lines whose first line is too long to sniff) are
    read one after the other."""
    builder = None
    for path, event, value in ijson.parse(stream, use_float=True, multiple_values=True):
        if builder is None:
            if path != prefix or event in ("map_key", "end_map", "end_array"):
                continue
            builder = RecordBuilder(max_bytes, id_field)
        if builder.feed(event, value):
            yield builder
            builder = None


def sample(head: bytes, per_prefix: int = 50) -> tuple[Optional[str], dict[str, list]]:
    """(root kind 'map'/'array'/'scalar', {prefix: sample values}) from the
    start of a JSON document: the values at the root and at every array-item
    prefix (``...item``), the last one possibly partial when ``head`` ends
    inside it.  Used to find where the records and their text are."""
    samples: dict[str, list] = {}
    active: dict[str, RecordBuilder] = {}
    root = None
    try:
        for path, event, value in ijson.parse(io.BytesIO(head), use_float=True, multiple_values=True):
            if root is None:
                root = {"start_map": "map", "start_array": "array"}.get(event, "scalar")
            if (
                event in _OPEN or event not in _CLOSE and event != "map_key"
            ) and path not in active and (path == "" or path.endswith("item")):
                if len(samples.setdefault(path, [])) < per_prefix:
                    active[path] = RecordBuilder(len(head) + 1)
            for key, builder in list(active.items()):
                if builder.feed(event, value):
                    samples[key].append(builder.value)
                    del active[key]
    except JSONError:
        pass
    for key, builder in active.items():  # records cut by the end of the head
        if builder.value is not None:
            samples[key].append(builder.value)
    return root, samples
