"""The real texts under ZH_SHARED_DATA, file by file, for tokenizer measurements.

One reader per layout of ``$ZH_SHARED_DATA`` (see its README): the corpora, the STS
pairs (each sentence a text) and the summarization sets (each field a text).  Used by
the [UNK]-rate report in stats.json, the released-vocabulary agreement tests and the
tokenizer bench; never for fitting anything (the STS and CSL test files are evaluation
data).  The corpus pipeline has its own, general readers; these only know this folder.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

SHARED_DATA = Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))
_SOGOU_CONTENT = re.compile(r"<content>(.*?)</content>", re.S)


def _jsonl(path: Path, *fields: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                yield from (record[k] for k in fields if record.get(k))


def _tsv(path: Path, columns: tuple[int, ...], encoding: str = "utf-8") -> Iterator[str]:
    with path.open(encoding=encoding) as f:
        for line in f:
            cells = line.rstrip("\n").split("\t")
            yield from (cells[c] for c in columns if c < len(cells) and cells[c])


def _csv_column(text: io.TextIOBase, column: str) -> Iterator[str]:
    for row in csv.DictReader(text):
        if row.get(column):
            yield row[column]


def _read(path: Path) -> Iterator[str]:
    """The texts of one shared-data file (by its folder and name)."""
    folder, name = path.parent.name, path.name
    if folder == "c3":
        for doc in json.loads(path.read_text(encoding="utf-8")):
            yield "\n".join(doc[0])
    elif folder == "chinese_poetry":
        for doc in json.loads(path.read_text(encoding="utf-8")):
            yield "\n".join(doc.get("paragraphs") or doc.get("content") or [])
    elif folder == "cmrc2018":
        for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
            yield from (p["context"] for p in article["paragraphs"])
    elif folder == "fewclue":
        yield from _jsonl(path, "content", "sentence")
    elif folder == "sogou_news_smarty":
        text = path.read_bytes().decode("gb18030" if ".gbk." in name else "utf-8")
        yield from (m.group(1) for m in _SOGOU_CONTENT.finditer(text) if m.group(1).strip())
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            for member in sorted(m for m in z.namelist() if m.endswith(".csv")):
                yield from _csv_column(io.TextIOWrapper(z.open(member), encoding="utf-8-sig"), "review")
    elif name.endswith(".csv"):
        with path.open(encoding="utf-8-sig") as f:
            yield from _csv_column(f, "review")
    elif folder == "thucnews_cnews_subset":
        yield from _tsv(path, (1,))
    elif folder == "thucnews_titles":
        yield from _tsv(path, (0,))
    elif folder == "zhwiki_sample":
        yield from _jsonl(path, "text")
    elif path.parent.parent.name == "senteval_cn":
        yield from _tsv(path, (0, 1))
    elif folder == "csl_benchmark_ts":
        yield from _tsv(path, (1, 2))
    elif folder == "csl_title_3500":
        yield from _tsv(path, (0, 1))
    else:
        raise ValueError(f"{path}: no reader for this shared-data file")


def text_files(root: str | Path = SHARED_DATA) -> list[Path]:
    """Every text file of the shared data (corpus/, sts/, summarization/), sorted."""
    root = Path(root)
    files = [p for sub in ("corpus", "sts", "summarization") for p in (root / sub).rglob("*") if p.is_file()]
    return sorted(p for p in files if p.name != "class.txt")  # THUCNews label names, not text


@functools.lru_cache(maxsize=4)
def documents(root: str | Path = SHARED_DATA, max_chars: int | None = None) -> dict[str, list[str]]:
    """{path relative to root: texts}, each file capped at ``max_chars`` characters (first texts).
    Cached per (root, max_chars): treat the result as read-only."""
    root = Path(root)
    out: dict[str, list[str]] = {}
    for path in text_files(root):
        texts, n = [], 0
        for text in _read(path):
            texts.append(text)
            n += len(text)
            if max_chars is not None and n >= max_chars:
                break
        out[str(path.relative_to(root))] = texts
    return out
