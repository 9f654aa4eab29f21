import pytest

from gpt_from_scratch import (GPT_CONFIG_124M, GPT_CONFIG_355M, GPT_CONFIG_774M, GPT_CONFIG_1558M,
                              GPT_CONFIGS, DummyGPTModel, GPTModel, validate_config)


def test_124m_is_the_series_config():
    assert GPT_CONFIG_124M == {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12,
                               "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}


@pytest.mark.parametrize("cfg, sizes", [
    (GPT_CONFIG_355M, (1024, 16, 24)), (GPT_CONFIG_774M, (1280, 20, 36)), (GPT_CONFIG_1558M, (1600, 25, 48)),
])
def test_larger_gpt2_sizes(cfg, sizes):
    assert (cfg["emb_dim"], cfg["n_heads"], cfg["n_layers"]) == sizes
    assert {k: v for k, v in cfg.items() if k not in ("emb_dim", "n_heads", "n_layers")} == \
        {k: v for k, v in GPT_CONFIG_124M.items() if k not in ("emb_dim", "n_heads", "n_layers")}


def test_every_named_config_is_valid():
    assert len(GPT_CONFIGS) == 4
    for cfg in GPT_CONFIGS.values():
        assert validate_config(cfg) is cfg


def test_missing_key_is_a_key_error(tiny_cfg):
    del tiny_cfg["n_heads"]
    with pytest.raises(KeyError, match="'n_heads'"):
        GPTModel(tiny_cfg)


def test_mistyped_key_names_it_and_suggests_the_right_one(tiny_cfg):
    tiny_cfg["n_head"] = tiny_cfg.pop("n_heads")
    with pytest.raises(ValueError, match=r"'n_head' \(did you mean 'n_heads'\?\)"):
        validate_config(tiny_cfg)


def test_unknown_key(tiny_cfg):
    with pytest.raises(ValueError, match="unknown config key.*'bias_everywhere'"):
        validate_config({**tiny_cfg, "bias_everywhere": True})


@pytest.mark.parametrize("key, value", [("emb_dim", "32"), ("n_layers", 2.0), ("qkv_bias", 1),
                                        ("drop_rate", "0.1"), ("vocab_size", True)])
def test_wrong_type_names_key_and_value(tiny_cfg, key, value):
    with pytest.raises(TypeError, match=f"config\\['{key}'\\] must be .*got {value!r}"):
        validate_config({**tiny_cfg, key: value})


@pytest.mark.parametrize("key, value, limit", [("emb_dim", 0, "positive"), ("drop_rate", 1.0, r"\[0, 1\)"),
                                               ("drop_rate", -0.1, r"\[0, 1\)"), ("n_layers", -1, ">= 0"),
                                               ("context_length", -5, "positive")])
def test_value_out_of_range(tiny_cfg, key, value, limit):
    with pytest.raises(ValueError, match=f"{key}.*{limit}.*got {value}"):
        validate_config({**tiny_cfg, key: value})


def test_emb_dim_not_divisible_by_heads(tiny_cfg):
    with pytest.raises(ValueError, match=r"emb_dim'\] = 30 must be divisible by config\['n_heads'\] = 4"):
        DummyGPTModel({**tiny_cfg, "emb_dim": 30})


def test_not_a_dict():
    with pytest.raises(TypeError, match="must be a dict"):
        validate_config([("emb_dim", 768)])
