"""Every document of the shared real corpora as (source, text), in a fixed order.

Used by the data-quality benches (ratio calibration, PII and word-list checks); label files
refer to a document by (source, index within that source) in this order, never by its text.
"""
from __future__ import annotations

import csv
import glob
import json
import os
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ZH_SHARED_DATA", ROOT.parent / "shared" / "data"))


def documents() -> Iterator[tuple[str, str]]:
    c = str(SHARED / "corpus")
    for f in sorted(glob.glob(c + "/sophonplus_reviews/*.csv")) + sorted(glob.glob(c + "/weibo_senti_subset/*.csv")):
        with open(f, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("review"):
                    yield os.path.basename(f), row["review"]
    with open(c + "/thucnews_cnews_subset/cnews.val.txt", encoding="utf-8") as fh:
        for line in fh:
            yield "cnews", line.split("\t", 1)[1]
    for f in sorted(glob.glob(c + "/thucnews_titles/*.txt")):
        if not f.endswith("class.txt"):
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    yield "titles", line.split("\t")[0]
    for f in sorted(glob.glob(c + "/zhwiki_sample/*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                yield os.path.basename(f), json.loads(line)["text"]
    for name, key in (("chid_unlabeled.json", "content"), ("eprstmt_unlabeled.json", "sentence"),
                      ("iflytek_test_public.json", "sentence"), ("csldcp_test_public.json", "content")):
        with open(c + "/fewclue/" + name, encoding="utf-8") as fh:
            for line in fh:
                yield name, json.loads(line)[key]
    for f in sorted(glob.glob(c + "/c3/*.json")):
        for doc in json.loads(Path(f).read_text(encoding="utf-8")):
            yield "c3", "\n".join(doc[0])
    for f in sorted(glob.glob(c + "/chinese_poetry/*.json")):
        for doc in json.loads(Path(f).read_text(encoding="utf-8")):
            yield os.path.basename(f), "\n".join(doc.get("paragraphs", []))


def labels(path: Path) -> dict[tuple[str, int], str]:
    """A team label file (``source<TAB>index<TAB>label`` lines, ``#`` comments) as
    {(source, index in :func:`documents` order): label}, in file order."""
    out: dict[tuple[str, int], str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            src, idx, label = line.split("\t")
            out[(src, int(idx))] = label
    return out
