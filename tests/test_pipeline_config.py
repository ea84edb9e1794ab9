"""Typed pipeline config: strict keys in every section, one default each, one-line errors."""
import subprocess
import sys

import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.typed_config import ConfigError


@pytest.mark.parametrize("text, key", [
    ("clean:\n  emojii: keep\n", "clean.emojii"),
    ("filters:\n  max_digit_ration: 0.2\n", "filters.max_digit_ration"),
    ("dedup:\n  treshold: 0.9\n", "dedup.treshold"),
    ("pii:\n  id_card: hide\n", "pii.id_card"),
    ("langid:\n  min_score: high\n", "langid.min_score"),
    ("decontam:\n  eval_sets: [{name: x, pth: y}]\n", "decontam.eval_sets[0].pth"),
    ("wordlists:\n  lists: [{name: porn, hits: 2}]\n", "wordlists.lists[0].hits"),
    ("outputs:\n  gzip_level: 1\n", "outputs"),
])
def test_unknown_or_bad_key_names_it(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")) as err:
        load_config(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_defaults_and_overrides():
    cfg = load_config(None, {"output": {"num_shards": 3}, "dedup": {"threshold": 0.7}})
    assert cfg.output.num_shards == 3 and cfg.dedup.threshold == 0.7
    assert cfg.clean == PipelineConfig().clean
    with pytest.raises(ConfigError, match="num_perm"):
        load_config(None, {"dedup": {"num_perm": 100, "bands": 16}})


@pytest.mark.slow
@pytest.mark.parametrize("text", ["clean: [unclosed\n", "clean:\n  emojii: keep\n"])
def test_cli_bad_config_is_one_line(tmp_path, text):
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "in.jsonl").write_text('{"text": "今天天气很好，我们去公园散步吧。"}\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(tmp_path / "in.jsonl"),
                           "--output", str(tmp_path / "out"), "--config", str(tmp_path / "bad.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.yaml" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
