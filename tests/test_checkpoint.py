"""Checkpoint integrity: unfinished or damaged checkpoints are never loaded."""
import json

from pipeline.corpus import sha256_file
from pretrain import checkpoint as ckpt


def fake_checkpoint(root, step, payload=b"weights"):
    folder = root / ckpt.tag_for(step)
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(payload)
    files = {"model.pt": {"size": len(payload), "sha256": sha256_file(folder / "model.pt")}}
    (folder / ckpt.MARKER).write_text(json.dumps({"step": step, "files": files}))
    return folder


def test_latest_intact_checkpoint_is_chosen(tmp_path):
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 20)
    assert ckpt.find_latest(tmp_path) == ("step-00000020", 20)


def test_damaged_checkpoint_falls_back_to_previous(tmp_path):
    fake_checkpoint(tmp_path, 10)
    newest = fake_checkpoint(tmp_path, 20)
    (newest / "model.pt").write_bytes(b"weightz")            # same size, different bytes
    assert "does not match" in ckpt.verify(newest)
    assert ckpt.find_latest(tmp_path) == ("step-00000010", 10)


def test_unfinished_save_is_ignored_and_cleaned(tmp_path):
    fake_checkpoint(tmp_path, 10)
    (tmp_path / "step-00000020.partial").mkdir()
    no_marker = tmp_path / "step-00000030"
    no_marker.mkdir()
    assert ckpt.find_latest(tmp_path) == ("step-00000010", 10)
    ckpt.clean_partials(tmp_path)
    assert not (tmp_path / "step-00000020.partial").exists()
