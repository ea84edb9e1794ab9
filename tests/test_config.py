"""Config loading: presets, overrides and one-line errors naming file and key."""
import pytest

from pretrain.config import ConfigError, config_path, load_config, parse_overrides, preset_names

T5 = config_path("t5-pegasus")


def test_presets_and_published_dimensions():
    assert preset_names(T5) == ["tiny", "small", "base"]
    small = load_config(T5, size="small")
    assert (small.arch.d_model, small.arch.d_ff, small.arch.num_layers, small.arch.num_heads) == (512, 1024, 8, 6)
    base = load_config(T5, size="base")
    assert (base.arch.d_model, base.arch.d_ff, base.arch.num_layers, base.arch.num_heads) == (768, 2048, 12, 12)
    tiny = load_config(T5)
    assert tiny.size == "tiny" and tiny.run_dir == "runs/t5-pegasus" and tiny.train.zero_stage == 2


def test_overrides_apply_and_are_typed():
    cfg = load_config(T5, ["train.steps=50", "train.zero_stage=3", "train.lr=1e-4", "run_dir=/tmp/x"])
    assert cfg.train.steps == 50 and cfg.train.zero_stage == 3 and cfg.train.lr == pytest.approx(1e-4)
    assert cfg.run_dir == "/tmp/x"
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


@pytest.mark.parametrize("override, key", [
    (["train.stepz=5"], "train.stepz"),
    (["train.steps=many"], "train.steps"),
    (["train.zero_stage=7"], "train.zero_stage"),
    (["train.precision=fp8"], "train.precision"),
    (["nonsense=1"], "nonsense"),
])
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(T5, override)
    msg = str(err.value)
    assert key in msg and "\n" not in msg


def test_bad_file_names_file_and_key(tmp_path):
    text = T5.read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  lr: 1.0e-3\n  optimizer: adamw", "  lr: fast\n  optimizer: adamw", 1),
                   encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'train.lr' must be float"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(text.replace("data:\n", "data:\n  corpsu: x\n", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown key 'data.corpsu'"):
        load_config(unknown)
    missing = tmp_path / "missing.yaml"
    missing.write_text(text.replace("model: t5-pegasus\n", "", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"missing.yaml: missing required key 'model'"):
        load_config(missing)


def test_unknown_size_lists_presets():
    with pytest.raises(ConfigError, match=r"unknown SIZE 'huge'.*tiny\|small\|base"):
        load_config(T5, size="huge")


@pytest.mark.parametrize("model", ["t5-pegasus", "electra", "mlm-proposal", "roformer-sim"])
def test_every_model_file_and_preset_validates(model):
    path = config_path(model)
    for size in preset_names(path):
        cfg = load_config(path, size=size)
        assert cfg.model == model and cfg.size == size


def test_deepspeed_config_fills_auto_values():
    from pretrain.engine import deepspeed_config, lr_lambda

    for stage in (0, 1, 2, 3):
        cfg = load_config(T5, [f"train.zero_stage={stage}", "train.precision=bf16"])
        ds = deepspeed_config(cfg)
        assert ds["zero_optimization"]["stage"] == stage and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
        assert "auto" not in str(ds)
    cfg = load_config(T5, ["train.schedule=inverse_sqrt", "train.warmup_steps=10"])
    f = lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(39) == pytest.approx(0.5)
