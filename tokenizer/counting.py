"""Corpus statistics for the vocabulary, computed as an Apache Beam job.

Each document is normalized and cut with jieba (HMM off); a DoFn emits the
per-document counts of multi-character CJK words, ASCII runs and characters,
and ``CombinePerKey(sum)`` adds them up.  The runner is always named
explicitly (Beam 2.77 would otherwise try to fetch the Prism runner).
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

from .normalize import SPACE_MARK, is_alnum_run, is_cjk_run, is_space, normalize
from .vocab import Counts


def shard_paths(data_dir: str | Path, split: str = "train") -> list[str]:
    """Shards of one split: from manifest.json when present (checked by
    ``pipeline.corpus``), else ``split/*.jsonl[.gz]``."""
    from pipeline import corpus

    data_dir = str(data_dir)
    if corpus.read_json(corpus.join(data_dir, corpus.MANIFEST)) is not None:
        paths = corpus.list_shards(data_dir, split)
        if paths:
            return paths
    return sorted(glob.glob(os.path.join(data_dir, split, "*.jsonl.gz")) + glob.glob(os.path.join(data_dir, split, "*.jsonl")))


def iter_texts(paths: list[str]):
    """Yield the ``text`` of every document in the given JSON-lines shards."""
    from pipeline import corpus

    yield from corpus.iter_texts(paths)


def count_document(text: str, cut, lowercase: bool = True) -> Counter:
    """Counts for one document, keyed ``(kind, token)`` with kind in w/a/c/n."""
    norm = normalize(text, lowercase)
    out: Counter = Counter()
    pending_space = False
    for word in cut(norm):
        if is_space(word):
            pending_space = True
            continue
        if is_cjk_run(word):
            if len(word) > 1:
                out["w", word] += 1
        elif is_alnum_run(word):
            out["a", SPACE_MARK + word if pending_space else word] += 1
        pending_space = False
    chars = Counter(ch for ch in norm if not ch.isspace())
    for ch, c in chars.items():
        out["c", ch] += c
    out["n", "documents"] += 1
    out["n", "characters"] += len(norm)
    return out


def _make_dofn(lowercase: bool, user_dict: str | None):
    """Built lazily so importing this module does not import Beam."""
    import apache_beam as beam

    class CountDoc(beam.DoFn):
        def setup(self):
            from .jieba_util import jieba_instance

            from pipeline.progress import Progress

            dt = jieba_instance(user_dict)
            self.cut = lambda s: dt.cut(s, HMM=False)
            self.progress = Progress("count words for the vocabulary")

        def teardown(self):
            self.progress.close()

        def process(self, line):
            line = line.strip()
            if line:
                text = json.loads(line)["text"]
                self.progress.update(1, chars=len(text))
                yield from count_document(text, self.cut, lowercase).items()

    return CountDoc()


def beam_options(runner: str = "DirectRunner", workers: int = 1, extra_args: list[str] | None = None):
    """The pipeline's own runner options (one place decides how runners are named)."""
    from pipeline.run import pipeline_options

    return pipeline_options(runner, workers, extra_args or [])


def count_corpus(
    data_dir: str | Path,
    lowercase: bool = True,
    user_dict: str | None = None,
    runner: str = "DirectRunner",
    workers: int = 1,
    runner_args: list[str] | None = None,
    work_dir: str | None = None,
) -> Counts:
    """Run the counting pipeline over the train shards and load the result."""
    import apache_beam as beam

    paths = shard_paths(data_dir, "train")
    if not paths:
        raise FileNotFoundError(f"no train shards under {data_dir} (manifest.json or train/*.jsonl.gz)")
    from pipeline.corpus import scratch_tmpdir

    with scratch_tmpdir():
        tmp = tempfile.mkdtemp(prefix="tok-counts-", dir=work_dir)
        prefix = os.path.join(tmp, "counts")
        with beam.Pipeline(options=beam_options(runner, workers, runner_args)) as p:
            (
                p
                | "Shards" >> beam.Create(paths)
                | "Read" >> beam.io.ReadAllFromText()
                | "Count" >> beam.ParDo(_make_dofn(lowercase, user_dict))
                | "Sum" >> beam.CombinePerKey(sum)
                | "Json" >> beam.Map(lambda kv: json.dumps([kv[0][0], kv[0][1], kv[1]], ensure_ascii=False))
                | "Write" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
            )
        counts = Counts()
        table = {"w": counts.words, "a": counts.ascii, "c": counts.chars}
        for f in sorted(glob.glob(prefix + "*")):
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    kind, token, c = json.loads(line)
                    if kind == "n":
                        setattr(counts, token, c)
                    else:
                        table[kind][token] = c
            os.remove(f)
        os.rmdir(tmp)
    return counts
