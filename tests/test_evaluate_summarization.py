"""`python -m pretrain.evaluate --task summarization`: fine-tune pretrained vs scratch, report ROUGE as JSON."""
import json

import pytest

from pretrain.evaluate import main


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, t5_data):
    """A tiny T5-PEGASUS export (random weights) with the project tokenizer, as the trainer writes it."""
    from pretrain.config import config_path, load_config
    from pretrain.objectives.t5_pegasus import T5PegasusObjective

    out = tmp_path_factory.mktemp("sum") / "export"
    cfg = load_config(config_path("t5-pegasus"), [*t5_data, "arch.d_model=64", "arch.d_ff=128", "arch.num_heads=2",
                                                  "arch.d_kv=32", "arch.num_layers=1", "arch.num_decoder_layers=1"])
    obj = T5PegasusObjective(cfg)
    obj.export(obj.build_model(), out)
    return out


def evaluate(capsys, *args):
    """The CLI entry point in-process (saves a second torch import); returns (exit code, stdout, stderr)."""
    code = main(["--task", "summarization", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prints_pretrained_and_scratch_rouge(tiny_export, shared_data, capsys):
    data = shared_data / "summarization" / "csl_title_3500"
    code, out, err = evaluate(capsys, "--model", str(tiny_export), "--data", str(data), "-o", "steps=4", "-o", "batch_size=4",
                    "-o", "eval_examples=6", "-o", "max_target_len=8")
    assert code == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["task"] == "summarization" and result["steps"] == 4 and result["examples"] == 6
    assert result["eval_file"].endswith("summarization_csl_dev.tsv")
    assert result["train_file"].endswith("summarization_csl_train.tsv")
    for entry in ("pretrained", "scratch"):
        scores = result[entry]
        assert {"rouge1", "rouge2", "rougeL"} <= set(scores)
        assert all(0.0 <= scores[k] <= 1.0 for k in ("rouge1", "rouge2", "rougeL"))
        assert scores["final_train_loss"] > 0
    # Same architecture and batches but different starting weights: the runs differ.
    assert result["pretrained"]["final_train_loss"] != result["scratch"]["final_train_loss"]


def test_reads_both_tsv_layouts(tmp_path):
    from pretrain.evaluation.summarization import read_pairs

    two = tmp_path / "a.tsv"
    two.write_text("标题一\t摘要一\n标题二\t摘要二\n", encoding="utf-8")
    three = tmp_path / "b.tsv"
    three.write_text("to title\t摘要一\t标题一\n", encoding="utf-8")
    assert read_pairs(two) == [("摘要一", "标题一"), ("摘要二", "标题二")]
    assert read_pairs(three) == [("摘要一", "标题一")]


def test_missing_model_or_data_is_one_line(tiny_export, tmp_path, capsys):
    code, out, err = evaluate(capsys, "--model", str(tmp_path / "nothing"))
    assert code == 2 and not out and err.strip().startswith("error:") and "config.json" in err
    code, out, err = evaluate(capsys, "--model", str(tiny_export), "--data", str(tmp_path / "nodata"))
    assert code == 2 and not out and "data folder not found" in err
