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
