"""Config loading: presets, overrides and one-line errors naming file and key."""
import pytest

from pretrain.config import ConfigError, config_path, load_config, models, parse_overrides, preset_names

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


@pytest.mark.parametrize("model", models())
def test_every_model_file_and_preset_validates(model):
    path = config_path(model)
    for size in preset_names(path):
        cfg = load_config(path, size=size)
        assert cfg.model == model and cfg.size == size


def test_every_adafactor_preset_trains_at_zero0_and_zero2_adafactor_is_warned_about():
    """DeepSpeed's ZeRO-1/2/3 hand the optimizer flat partitions: Adafactor would keep unfactored
    statistics and clip per partition, so the presets that use it (the T5 recipe) train at ZeRO-0."""
    from pretrain.engine import flat_adafactor

    seen = 0
    for model in models():
        path = config_path(model)
        for size in preset_names(path):
            cfg = load_config(path, size=size)
            if cfg.train.optimizer == "adafactor":
                seen += 1
                assert cfg.train.zero_stage == 0 and flat_adafactor(cfg) is None, (model, size)
    assert seen >= 4                                     # t5-pegasus and t5-span, small and base
    warning = flat_adafactor(load_config(T5, ["train.optimizer=adafactor", "train.zero_stage=2"]))
    assert "ZeRO-2" in warning and "train.zero_stage=0" in warning
    assert flat_adafactor(load_config(T5, ["train.optimizer=adamw", "train.zero_stage=2"])) is None


def test_deepspeed_config_fills_auto_values():
    from pretrain.engine import deepspeed_config, lr_lambda

    for stage in (0, 1, 2, 3):
        cfg = load_config(T5, [f"train.zero_stage={stage}", "train.precision=bf16"])
        ds = deepspeed_config(cfg)
        assert ds["zero_optimization"]["stage"] == stage and not ds["fp16"]["enabled"]
        assert ds["bf16"]["enabled"] == (stage > 0)       # ZeRO-0: our master weights (pretrain.master_weights)
        assert "auto" not in str(ds)
    cfg = load_config(T5, ["train.schedule=inverse_sqrt", "train.warmup_steps=10"])
    f = lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(39) == pytest.approx(0.5)


def test_models_and_objectives_come_from_the_registry():
    from pretrain.objectives import registry

    assert {"t5-pegasus", "t5-span", "electra", "mlm-proposal", "roformer-sim"} <= set(registry())
    assert {"t5-pegasus", "t5-span", "electra", "mlm-proposal", "roformer-sim", "bert-wwm"} <= set(models())
    for model in models():
        cfg = load_config(config_path(model))
        assert cfg.objective.name in registry() and isinstance(cfg.arch, cfg.objective_class.spec.arch)


def test_a_recipe_is_a_yaml_naming_its_objective():
    """BERT whole-word masking is mlm-proposal with uniform sampling over jieba words, as its own MODEL."""
    cfg = load_config(config_path("bert-wwm"))
    assert cfg.model == "bert-wwm" and cfg.objective.name == "mlm-proposal"
    assert cfg.objective.sampling == "uniform" and cfg.objective.whole_word is True
    assert cfg.run_dir == "runs/bert-wwm"


@pytest.mark.parametrize("override, key", [
    (["objective.mask_prop=0.2"], "objective.mask_prop"),           # misspelled key inside the objective section
    (["objective.mask_prob=1.5"], "objective.mask_prob"),           # out of range (options __post_init__)
    (["objective.sampling=greedy"], "objective.sampling"),          # not one of the Literal values
    (["arch.d_kv=32"], "arch.d_kv"),                                 # a T5 field in an encoder family
    (["arch.num_heads=3"], "arch.num_heads"),                        # must divide d_model
    (["objective.name=nope"], "objective.name"),                    # unknown objective
    (["growth=[{at_step: 0, layers: 4}]"], "growth[0].at_step"),
])
def test_objective_and_arch_sections_are_validated_at_load(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(config_path("mlm-proposal"), override)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_objective_from_outside_the_package():
    cfg = load_config(T5, ["objective.name=tests.faults:FaultyT5", "objective.faults=loss@2"])
    assert cfg.objective_class.__name__ == "FaultyT5" and cfg.objective.faults == "loss@2"
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_config(T5, ["objective.name=tests.nowhere:X"])


def test_t5_arch_keeps_its_own_fields():
    cfg = load_config(config_path("t5-span"), ["arch.d_kv=16", "objective.noise_density=0.3"])
    assert cfg.arch.d_kv == 16 and cfg.objective.noise_density == 0.3
    with pytest.raises(ConfigError, match="objective.noise_density"):
        load_config(config_path("t5-span"), ["objective.noise_density=1.0"])
