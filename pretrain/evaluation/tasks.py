"""The downstream task table: one place that fixes each task's data files and train/dev/test roles.

Every task reads real labeled data under ``$ZH_SHARED_DATA`` (default ``/work/shared/data``).
Most sets arrive here without a training split, so a split is *carved* deterministically:
each row's group key (the text, the sentence pair, or the whole passage for reading
comprehension) is hashed (sha1) into one of 100 buckets and the bucket decides the role.
Identical keys therefore always share a role, and a passage never feeds two roles.

| task | kind | classes | train | dev | test | published row |
|---|---|---|---|---|---|---|
| thucnews_titles | single | 10 | `thucnews_titles/dev.txt` buckets 0-79 | same file, buckets 80-99 | `thucnews_titles/test.txt` (all) | - |
| iflytek | single | 119 | `fewclue/iflytek_test_public.json` buckets 0-59 | buckets 60-74 | buckets 75-99 | WoBERT (official dev) |
| chnsenticorp | single | 2 | `ChnSentiCorp_htl_all.csv` buckets 0-79 | 80-89 | 90-99 | Chinese-ELECTRA (ERNIE split) |
| waimai | single | 2 | `waimai_10k.csv` buckets 0-79 | 80-89 | 90-99 | - |
| weibo | single | 2 | `weibo_senti_100k_subset.csv` buckets 0-79 | 80-89 | 90-99 | - |
| lcqmc | pair | 2 | `LCQMC.valid.data` buckets 0-79 | same file, buckets 80-99 | `LCQMC.test.data` (all) | Chinese-ELECTRA (same test file) |
| bq | pair | 2 | `BQ.valid.data` buckets 0-79 | same file, buckets 80-99 | `BQ.test.data` (all) | Chinese-ELECTRA (same test file) |
| cmrc2018 | span | - | `cmrc2018_trial.json` (all) + `cmrc2018_dev.json` passages in buckets 0-59 | dev passages 60-69 | dev passages 70-99 | Chinese-ELECTRA (whole dev set) |
| c3 | choice | - | `c3-m-train.json` | `c3-m-dev.json` | `c3-m-test.json` | - |

A train or dev row whose key also occurs in the test role (and a dev row whose key is in train)
is dropped and counted (``overlap_dropped``): a separate test file can repeat rows of the file
the other roles were carved from.
Test rows are only ever scored: nothing is fitted, stopped early or selected on them.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger("pretrain.evaluate")
ROLES = ("train", "dev", "test")


def shared_data() -> Path:
    return Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data"))


class BadRow(ValueError):
    """A malformed input row: counted under its reason, never a traceback."""


def bucket(key: str) -> int:
    """A stable 0..99 bucket for a row's group key (independent of Python's hash seed)."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 100


# -- readers: path -> iterator of (line number, row) or BadRow ---------------------------------
def _int_label(value: str, n: int) -> int:
    try:
        label = int(str(value).strip())
    except ValueError:
        raise BadRow("label is not an integer") from None
    if not 0 <= label < n:
        raise BadRow(f"label outside 0..{n - 1}")
    return label


def read_tsv_single(path: Path, n: int):
    """``text<TAB>label`` lines (THUCNews titles)."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 2 or not cols[0].strip():
                yield lineno, BadRow("expected text<TAB>label")
                continue
            try:
                yield lineno, {"text": cols[0].strip(), "label": _int_label(cols[1], n)}
            except BadRow as exc:
                yield lineno, exc


def read_tsv_pair(path: Path, n: int):
    """``a<TAB>b<TAB>label`` lines (senteval_cn LCQMC / BQ)."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 3 or not cols[0].strip() or not cols[1].strip():
                yield lineno, BadRow("expected a<TAB>b<TAB>label")
                continue
            try:
                yield lineno, {"text_a": cols[0].strip(), "text_b": cols[1].strip(), "label": _int_label(cols[2], n)}
            except BadRow as exc:
                yield lineno, exc


def read_csv_single(path: Path, n: int):
    """CSV with a ``label,review`` header (SophonPlus sentiment sets)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            lineno = reader.line_num
            text = (row.get("review") or "").strip().lstrip("\ufeff")
            if not text:
                yield lineno, BadRow("empty review")
                continue
            try:
                yield lineno, {"text": text, "label": _int_label(row.get("label", ""), n)}
            except BadRow as exc:
                yield lineno, exc


def read_jsonl_single(path: Path, n: int):
    """JSON lines with ``sentence`` and ``label`` (FewCLUE IFLYTEK)."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                rec = json.loads(line)
                text = str(rec["sentence"]).strip()
                label = _int_label(rec["label"], n)
            except (json.JSONDecodeError, KeyError, TypeError):
                yield lineno, BadRow("expected JSON with sentence and label")
                continue
            except BadRow as exc:
                yield lineno, exc
                continue
            yield lineno, ({"text": text, "label": label} if text else BadRow("empty sentence"))


def read_squad(path: Path, n: int = 0):
    """SQuAD-v1 JSON (CMRC 2018): one row per question, line = question index in the file."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    i = 0
    for article in data:
        for para in article["paragraphs"]:
            context = para["context"]
            for qa in para["qas"]:
                i += 1
                answers = [a for a in qa.get("answers", []) if a.get("text", "").strip()]
                if not answers:
                    yield i, BadRow("question without answers")
                    continue
                yield i, {"id": qa["id"], "question": qa["question"].strip(), "context": context,
                          "answers": [a["text"] for a in answers],
                          "answer_starts": [int(a.get("answer_start", -1)) for a in answers]}


def read_c3(path: Path, n: int = 0):
    """C3 JSON: ``[[paragraphs], [{question, choice, answer}], id]``; one row per question."""
    i = 0
    for doc in json.loads(path.read_text(encoding="utf-8")):
        context = "\n".join(doc[0])
        for q in doc[1]:
            i += 1
            choices = [c.strip() for c in q["choice"]]
            if q.get("answer", "").strip() not in choices or not 2 <= len(choices) <= 4:
                yield i, BadRow("answer not among 2-4 choices")
                continue
            yield i, {"id": f"{doc[2]}-{i}", "context": context, "question": q["question"].strip(),
                      "choices": choices, "label": choices.index(q["answer"].strip())}


# -- the table ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One data file and the roles it feeds: ``(("train", 80), ("dev", 20))`` carves by bucket."""
    path: str                                   # relative to the shared data folder
    roles: tuple[tuple[str, int], ...]

    def role_of(self, key: str) -> str:
        b, edge = bucket(key), 0
        for role, share in self.roles:
            edge += share
            if b < edge:
                return role
        raise AssertionError(f"{self.path}: role shares do not sum to 100")


@dataclass(frozen=True)
class Task:
    name: str
    kind: str                                    # single | pair | span | choice
    num_labels: int                              # classes (0 for span / choice)
    reader: Callable
    sources: tuple[Source, ...]
    max_len: int                                 # default max sequence length in tokens
    description: str
    metrics: tuple[str, ...] = field(default=("accuracy", "macro_f1"))

    @property
    def metric(self) -> str:
        """The primary metric: a mean of per-example scores (accuracy, or CMRC F1)."""
        return self.metrics[0]

    @property
    def chance(self) -> float:
        return 1.0 / self.num_labels if self.num_labels else 0.0


WHOLE_TEST = (("test", 100),)
CARVE_80_20 = (("train", 80), ("dev", 20))
CARVE_80_10_10 = (("train", 80), ("dev", 10), ("test", 10))

TASKS: dict[str, Task] = {t.name: t for t in (
    Task("thucnews_titles", "single", 10, read_tsv_single,
         (Source("corpus/thucnews_titles/dev.txt", CARVE_80_20),
          Source("corpus/thucnews_titles/test.txt", WHOLE_TEST)), 32,
         "THUCNews headlines, 10 news classes"),
    Task("iflytek", "single", 119, read_jsonl_single,
         (Source("corpus/fewclue/iflytek_test_public.json", (("train", 60), ("dev", 15), ("test", 25))),), 128,
         "IFLYTEK app descriptions, 119 classes (FewCLUE test_public, carved)"),
    Task("chnsenticorp", "single", 2, read_csv_single,
         (Source("corpus/sophonplus_reviews/ChnSentiCorp_htl_all.csv", CARVE_80_10_10),), 128,
         "ChnSentiCorp hotel reviews (htl_all), positive/negative"),
    Task("waimai", "single", 2, read_csv_single,
         (Source("corpus/sophonplus_reviews/waimai_10k.csv", CARVE_80_10_10),), 64,
         "waimai_10k food-delivery reviews, positive/negative"),
    Task("weibo", "single", 2, read_csv_single,
         (Source("corpus/weibo_senti_subset/weibo_senti_100k_subset.csv", CARVE_80_10_10),), 64,
         "weibo_senti_100k balanced subset, positive/negative"),
    Task("lcqmc", "pair", 2, read_tsv_pair,
         (Source("sts/senteval_cn/LCQMC/LCQMC.valid.data", CARVE_80_20),
          Source("sts/senteval_cn/LCQMC/LCQMC.test.data", WHOLE_TEST)), 64,
         "LCQMC question matching (same intent or not)"),
    Task("bq", "pair", 2, read_tsv_pair,
         (Source("sts/senteval_cn/BQ/BQ.valid.data", CARVE_80_20),
          Source("sts/senteval_cn/BQ/BQ.test.data", WHOLE_TEST)), 64,
         "BQ bank question matching (same intent or not)"),
    Task("cmrc2018", "span", 0, read_squad,
         (Source("corpus/cmrc2018/cmrc2018_trial.json", (("train", 100),)),
          Source("corpus/cmrc2018/cmrc2018_dev.json", (("train", 60), ("dev", 10), ("test", 30)))), 256,
         "CMRC 2018 span extraction (Wikipedia passages)", metrics=("f1", "em")),
    Task("c3", "choice", 0, read_c3,
         (Source("corpus/c3/c3-m-train.json", (("train", 100),)),
          Source("corpus/c3/c3-m-dev.json", (("dev", 100),)),
          Source("corpus/c3/c3-m-test.json", WHOLE_TEST)), 256,
         "C3 multiple-choice reading comprehension (mixed-genre documents)", metrics=("accuracy",)),
)}


def group_key(task: Task, row: dict) -> str:
    """What the carve hashes and what overlap is checked on: the text, the pair, or the passage."""
    if task.kind == "single":
        return row["text"]
    if task.kind == "pair":
        return row["text_a"] + "\t" + row["text_b"]
    return row["context"]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}' (valid: {', '.join(TASKS)})")
    return TASKS[name]


def load_splits(task: Task | str, root: str | Path | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Rows per role (train/dev/test) and the data accounting: read, rejected by reason, overlap dropped.

    ``read == sum(len(rows)) + sum(rejected.values()) + overlap_dropped`` holds.
    """
    task = get_task(task) if isinstance(task, str) else task
    root = Path(root) if root else shared_data()
    rows: dict[str, list[dict]] = {r: [] for r in ROLES}
    read, rejected, files = 0, Counter(), []
    for src in task.sources:
        path = root / src.path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: data file of task {task.name} not found (set ZH_SHARED_DATA)")
        files.append(str(path))
        bad, first_bad = 0, None
        for lineno, row in task.reader(path, task.num_labels):
            read += 1
            if isinstance(row, BadRow):
                rejected[str(row)] += 1
                bad += 1
                first_bad = first_bad or f"{path}:{lineno}: {row}"
                continue
            rows[src.role_of(group_key(task, row))].append(row)
        if first_bad:
            log.warning("%s (%d rejected rows in this file, first shown)", first_bad, bad)
    # A separate test file can repeat rows of the file the train/dev roles were carved from.
    dropped = 0
    for role, later in (("train", ("test",)), ("dev", ("test", "train"))):
        seen = {group_key(task, r) for other in later for r in rows[other]}
        kept = [r for r in rows[role] if group_key(task, r) not in seen]
        dropped += len(rows[role]) - len(kept)
        rows[role] = kept
    stats = {"files": files, "read": read, "rejected": dict(rejected), "overlap_dropped": dropped,
             **{role: len(rows[role]) for role in ROLES}}
    return rows, stats
