"""Byte streams under the readers: decompression that notices truncation,
archive members, a peekable head, and transcoding to UTF-8.

Beam's own decompressor (``CompressionTypes.AUTO``) stops quietly at the end
of the input even when the last gzip member is cut, so a truncated download
reads as a complete, shorter file.  Here every compressed stream is
decompressed with the stdlib/zstandard decompressor objects directly: a
stream that ends inside a member raises :class:`TruncatedInput` after
everything before the cut has been returned, and the reader counts a
``truncated_file`` reject.
"""

from __future__ import annotations

import bz2
import codecs
import io
import lzma
import posixpath
import tarfile
import zipfile
import zlib
from typing import Callable, Iterator, Optional

_CHUNK = 1 << 20


class TruncatedInput(EOFError):
    """The compressed input ended inside a member (a cut download or copy)."""


def _zstd():
    import zstandard

    return zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj()


# suffix -> decompressor factory (objects with decompress(), eof, unused_data)
DECOMPRESSORS: dict[str, Callable] = {
    ".gz": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    ".gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    ".tgz": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    ".bz2": bz2.BZ2Decompressor,
    ".xz": lzma.LZMADecompressor,
    ".lzma": lzma.LZMADecompressor,
    ".zst": _zstd,
    ".zstd": _zstd,
    ".deflate": zlib.decompressobj,
}
ARCHIVES = {".zip": "zip", ".tar": "tar", ".tgz": "tar"}


def compression_suffix(name: str) -> Optional[str]:
    lower = name.lower()
    return next((s for s in DECOMPRESSORS if lower.endswith(s)), None)


def strip_compression(name: str) -> str:
    suffix = compression_suffix(name)
    if suffix is None:
        return name
    return name[: -len(suffix)] + (".tar" if suffix == ".tgz" else "")


def archive_kind(name: str) -> Optional[str]:
    """'zip' or 'tar' by extension (after any compression suffix), else None."""
    return ARCHIVES.get(posixpath.splitext(strip_compression(name).lower())[1])


class _Refilled(io.RawIOBase):
    """A read-only stream over bytes produced piecewise by ``_refill()``
    (which returns False at the end)."""

    _pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:
        while not self._pending:
            if not self._refill():
                return b""
        if n is None or n < 0 or n >= len(self._pending):
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def _refill(self) -> bool:
        raise NotImplementedError


class Decompressed(_Refilled):
    """Decompressed bytes of ``raw``; concatenated members (multi-member
    gzip, multi-stream bz2/xz/zstd) are read one after the other, NUL padding
    between them is skipped, and an input that ends inside a member raises
    :class:`TruncatedInput` once the bytes before the cut have been read."""

    def __init__(self, raw, factory: Callable):
        self._raw, self._factory = raw, factory
        self._d = factory()
        self._fed = False  # bytes of the current member seen

    def _refill(self) -> bool:
        if self._d.eof:
            rest = self._d.unused_data.lstrip(b"\x00")
            self._d, self._fed = self._factory(), False
            if rest:
                self._feed(rest)
                return True
        chunk = self._raw.read(_CHUNK)
        if not chunk:
            if self._fed and not self._d.eof:
                raise TruncatedInput("compressed input ends inside a member")
            return False
        self._feed(chunk if self._fed else chunk.lstrip(b"\x00"))
        return True

    def _feed(self, data: bytes) -> None:
        if data:
            self._fed = True
            self._pending += self._d.decompress(data)


def decompress(raw, name: str):
    """``raw`` decompressed according to the suffix of ``name`` (or as is)."""
    suffix = compression_suffix(name)
    return Decompressed(raw, DECOMPRESSORS[suffix]) if suffix else raw


def read_head(stream, n: int) -> bytes:
    """Up to ``n`` bytes from the start of ``stream`` (several reads if short).
    A truncated stream gives what it has; it raises again on the next read,
    when the records before the cut have been read."""
    parts, size = [], 0
    while size < n:
        try:
            chunk = stream.read(n - size)
        except TruncatedInput:
            break
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class Prepend(_Refilled):
    """A binary stream that replays ``head`` before the rest of ``f``."""

    def __init__(self, head: bytes, f):
        self._pending, self._f = head, f

    def _refill(self) -> bool:
        self._pending = self._f.read(_CHUNK)
        return bool(self._pending)


class Transcoded(_Refilled):
    """``f`` (in ``encoding``) re-encoded as UTF-8, for encodings whose
    newline is not the byte 0x0A (UTF-16/32).  Undecodable bytes become lone
    surrogates, which strict UTF-8 decoding rejects later line by line."""

    def __init__(self, f, encoding: str):
        self._f = f
        self._dec = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
        self._done = False

    def _refill(self) -> bool:
        if self._done:
            return False
        chunk = self._f.read(_CHUNK)
        self._done = not chunk
        self._pending = self._dec.decode(chunk, final=self._done).encode("utf-8", "surrogatepass")
        return True


class Oversize(bytes):
    """A line longer than the record limit: only its first bytes (for the
    reject's snippet and id), never the whole line."""


OVERSIZE_KEEP = 1 << 16


def iter_lines(f, max_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without EOL) from a binary stream, 1-based; a line
    longer than ``max_bytes`` comes back as :class:`Oversize` (its first
    64 KB) and is never held in memory whole (a 50 MB line costs ~1 MB)."""
    lineno = 0
    parts: list[bytes] = []
    size = 0
    oversize: Optional[bytes] = None
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        pieces = chunk.split(b"\n")
        for piece in pieces[:-1]:
            lineno += 1
            if oversize is None and size + len(piece) > max_bytes:
                oversize = (b"".join(parts) + piece[:OVERSIZE_KEEP])[:OVERSIZE_KEEP]
            if oversize is not None:
                yield lineno, Oversize(oversize)
            else:
                parts.append(piece)
                yield lineno, b"".join(parts)
            parts, size, oversize = [], 0, None
        tail = pieces[-1]
        if oversize is not None:
            continue
        if size + len(tail) > max_bytes:
            oversize = (b"".join(parts) + tail[:OVERSIZE_KEEP])[:OVERSIZE_KEEP]
            parts, size = [], 0
        elif tail:
            parts.append(tail)
            size += len(tail)
    if parts or oversize is not None:
        lineno += 1
        yield lineno, (Oversize(oversize) if oversize is not None else b"".join(parts))


def _usable_member(name: str) -> bool:
    base = posixpath.basename(name.rstrip("/"))
    return bool(base) and not base.startswith((".", "_")) and "__MACOSX/" not in name


def members(stream, kind: str) -> Iterator[tuple[str, Callable]]:
    """(member name, opener) for each regular, non-hidden member of a zip or
    tar archive, in archive order; ``opener()`` returns the member's stream
    (decompressed by the member's own suffix, e.g. ``x.jsonl.gz``)."""
    if kind == "zip":
        with zipfile.ZipFile(stream) as zf:
            for info in zf.infolist():
                if not info.is_dir() and _usable_member(info.filename):
                    yield info.filename, (lambda info=info: decompress(zf.open(info), info.filename))
        return
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        for info in tf:
            if info.isfile() and _usable_member(info.name):
                yield info.name, (lambda info=info: decompress(tf.extractfile(info), info.name))
