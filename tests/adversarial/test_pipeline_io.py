"""Adversarial inputs for the corpus I/O: outputs inside inputs (#16.4),
hostile or damaged manifests (#16.10), symlink loops (#16.12), temporary
folders left behind (#16.16)."""

import gzip
import hashlib
import json
import os
import time

import pytest

from pipeline import pairs as pairs_mod
from pipeline import run as run_mod
from pretrain import stages
from pretrain.data import DataError, list_shards

TEXT = "今天上午，市图书馆举办了一场传统手工艺讲座，吸引了很多市民前来参加。"
SENTENCES = ["青溪镇的茶农今年春天决定修缮村口的老石桥。", "临江市交通局在周末组织大家整理上千册旧书。",
             "星禾科技的工程师第一次尝试种植耐旱的果树。", "博物馆讲解员连续三年坚持记录候鸟迁徙的路线。",
             "社区志愿者服务队利用假期时间清理河道里的垃圾。", "山区小学的校长克服了很多困难开设免费的书法课。",
             "动物园饲养员在专家指导下学会了制作当地方言词典。", "老秦家面馆的老板向市民公开征集意见后建设社区小花园。"]


def varied_doc(i: int) -> str:
    import random

    rng = random.Random(i)
    return f"第{i}篇：" + "".join(rng.sample(SENTENCES, 6))


def write_dataset(root, n=3):
    """A dataset folder as the pipeline writes it: one train shard, one valid shard, manifest."""
    entries = []
    for split in ("train", "valid"):
        rel = f"{split}/shard-00000-of-00001.jsonl.gz"
        lines = "".join(json.dumps({"id": f"{split}-{i}", "text": TEXT + str(i)}, ensure_ascii=False) + "\n" for i in range(n))
        data = gzip.compress(lines.encode(), mtime=0)
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        entries.append({"path": rel, "split": split, "documents": n, "characters": 0,
                        "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (root / "manifest.json").write_text(json.dumps({"shards": entries}))
    return entries


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# -------------------------------------------------------------- #16.4


def test_output_holding_the_inputs_is_refused_before_anything_is_deleted(tmp_path, capsys):
    out = tmp_path / "O"
    write_dataset(out)
    before = snapshot(out)
    assert run_mod.main(["--input", str(out / "train" / "*"), "--output", str(out)]) == 2
    assert "contains the input" in one_line_error(capsys)
    assert snapshot(out) == before


def test_output_inside_an_input_folder_is_refused(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text(json.dumps({"text": TEXT}, ensure_ascii=False) + "\n")
    for spec in (str(corpus), str(corpus / "**")):
        assert run_mod.main(["--input", spec, "--output", str(corpus / "clean")]) == 2
        assert "inside the input" in one_line_error(capsys)
    assert not (corpus / "clean").exists()


def test_pairs_output_inside_its_data_is_refused(tmp_path, capsys):
    data = tmp_path / "clean"
    write_dataset(data)
    before = snapshot(data)
    for out in (data, data / "pairs", tmp_path):
        assert pairs_mod.main(["--data", str(data), "--out", str(out)]) == 2
        one_line_error(capsys)
    assert snapshot(data) == before


# -------------------------------------------------------------- #16.10


@pytest.mark.parametrize("path", ["../../outside.jsonl.gz", "/etc/hostname", "train/../../x.jsonl.gz", "", 7])
def test_manifest_paths_are_confined_to_the_dataset_folder(tmp_path, capsys, path):
    data = tmp_path / "data" / "clean"
    entries = write_dataset(data)
    outside = tmp_path / "outside.jsonl.gz"
    outside.write_bytes((data / entries[0]["path"]).read_bytes())
    entries[0]["path"] = path
    (data / "manifest.json").write_text(json.dumps({"shards": entries}))
    with pytest.raises(DataError, match="outside the dataset folder"):
        list_shards(data, "train")
    assert pairs_mod.main(["--data", str(data), "--out", str(tmp_path / "pairs")]) == 2
    assert "outside the dataset folder" in one_line_error(capsys)


def test_shard_sizes_are_checked_on_open_and_sha256_in_full(tmp_path):
    from pipeline.corpus import CorpusError, verify

    data = tmp_path / "clean"
    write_dataset(data)
    shard = data / "train" / "shard-00000-of-00001.jsonl.gz"
    good = shard.read_bytes()
    assert verify(str(data), "full") == 2
    shard.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))         # same size, other bytes
    assert list_shards(data, "train") == [str(shard)]              # the cheap check passes...
    with pytest.raises(CorpusError, match="sha256 differs"):       # ...the full one does not
        verify(str(data), "full")
    shard.write_bytes(good[:-10])                                  # truncated
    with pytest.raises(DataError, match="10 bytes|bytes, .* says"):
        list_shards(data, "train")
    assert verify(str(data), "off") == 2                           # the documented way to skip
    with pytest.raises(CorpusError, match="unknown verify level"):
        verify(str(data), "fast")


def test_a_truncated_gzip_shard_is_an_error_not_a_short_read(tmp_path):
    from pretrain.data import read_shard

    data = tmp_path / "clean"
    write_dataset(data, n=200)
    shard = data / "train" / "shard-00000-of-00001.jsonl.gz"
    shard.write_bytes(shard.read_bytes()[:-30])
    with pytest.raises(DataError, match="unreadable shard"):
        read_shard(str(shard))


# -------------------------------------------------------------- #16.12


def test_symlink_loop_does_not_hang_the_corpus_listing(tmp_path):
    corpus = tmp_path / "dir"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.jsonl").write_text("{}\n")
    (corpus / "sub" / "b.jsonl").write_text("{}\n")
    os.symlink("..", corpus / "sub" / "loop")
    os.symlink(str(corpus), corpus / "self")
    start = time.perf_counter()
    files = stages.corpus_files(str(corpus / "**"))
    assert time.perf_counter() - start < 5
    assert files == [str(corpus / "a.jsonl"), str(corpus / "sub" / "b.jsonl")]
    assert files == run_mod.expand_inputs([str(corpus / "**")]) == stages.corpus_files(str(corpus))


# -------------------------------------------------------------- #16.16


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_pipeline_run_leaves_nothing_in_tmpdir(tmp_path, monkeypatch, workers):
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "text": varied_doc(i)}, ensure_ascii=False) + "\n" for i in range(30)))
    stats = run_mod.run_pipeline([str(src)], str(tmp_path / "out"), workers=workers)
    assert stats["written"] > 0 and stats["accounted"]
    pairs_mod.build_pairs(str(tmp_path / "out"), str(tmp_path / "pairs"), workers=workers)
    assert sorted(os.listdir(tmp)) == []
