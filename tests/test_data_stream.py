"""The training stream: disjoint across ranks, deterministic, exactly resumable."""
import gzip
import json

import pytest

from pretrain.data import DataError, ShardStream, list_shards


def make_shards(root, n_shards=3, per_shard=7):
    shards = []
    for s in range(n_shards):
        rel = f"train/shard-{s:05d}-of-{n_shards:05d}.jsonl.gz"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            for i in range(per_shard):
                fh.write(json.dumps({"id": f"{s}-{i}", "text": "文本"}) + "\n")
        shards.append({"path": rel, "split": "train", "documents": per_shard, "characters": 0, "sha256": ""})
    (root / "manifest.json").write_text(json.dumps({"shards": shards}))
    return list_shards(root, "train")


def take(stream, n):
    it = iter(stream)
    return [next(it)["id"] for _ in range(n)]


def test_ranks_partition_an_epoch(tmp_path):
    shards = make_shards(tmp_path)
    seen = []
    for rank in range(2):
        seen += [r["id"] for r in ShardStream(shards, rank, 2, seed=1, loop=False)]
    assert sorted(seen) == sorted(f"{s}-{i}" for s in range(3) for i in range(7))


def test_resume_continues_exactly(tmp_path):
    shards = make_shards(tmp_path)
    straight = take(ShardStream(shards, 1, 2, seed=5), 25)   # crosses an epoch boundary
    first = ShardStream(shards, 1, 2, seed=5)
    head = take(first, 9)
    state = json.loads(json.dumps(first.state_dict()))        # survives serialization
    resumed = ShardStream(shards, 1, 2, seed=5)
    resumed.load_state_dict(state)
    assert head + take(resumed, 16) == straight


def test_missing_shard_is_a_clear_error(tmp_path):
    make_shards(tmp_path)
    (tmp_path / "train" / "shard-00001-of-00003.jsonl.gz").unlink()
    with pytest.raises(DataError, match="shard-00001-of-00003.jsonl.gz: shard listed in .* is missing"):
        list_shards(tmp_path, "train")
    with pytest.raises(DataError, match="manifest not found"):
        list_shards(tmp_path / "nowhere", "train")


@pytest.mark.slow     # 2 s: a fresh interpreter (the fast tier stays under a minute)
def test_local_dataset_folders_are_read_without_importing_beam():
    """Local shards are written, verified, read and cleared with the OS (pipeline/corpus.py), and the
    trainer's modules import no Beam (0.7 s) at start: Beam comes in only for a remote path (and for
    input listing, pipeline.readers)."""
    import subprocess
    import sys

    from conftest import REPO
    code = ("import sys, tempfile, pathlib, json, gzip\n"
            "import pretrain.train, pretrain.data, pretrain.token_shards, pretrain.checkpoint\n"
            "from pipeline import corpus\n"
            "root = pathlib.Path(tempfile.mkdtemp())\n"
            "corpus.write_bytes(str(root / 'train/shard-00000-of-00001.jsonl.gz'), corpus.gzip_bytes(b'{\"text\": \"x\"}\\n'))\n"
            "data = (root / 'train/shard-00000-of-00001.jsonl.gz').read_bytes()\n"
            "corpus.write_manifest(str(root), [corpus.shard_entry('train/shard-00000-of-00001.jsonl.gz', 'train', data, 1, 1)], {})\n"
            "assert corpus.verify(str(root), 'full') == 1\n"
            "assert list(corpus.iter_texts(corpus.list_shards(str(root), 'train'))) == ['x']\n"
            "corpus.clear_outputs(str(root))\n"
            "assert not (root / 'manifest.json').exists() and not list(root.glob('train/*'))\n"
            "assert 'apache_beam' not in sys.modules, 'Beam imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
