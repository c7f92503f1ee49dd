import pytest
import torch

from genforge.errors import ConfigError
from genforge.models.presets import (
    build_model,
    config_params,
    count_params,
    flops_per_token,
    model_config,
    resolve_size,
    swiglu_width,
)

SPECIAL = {"pad": 0, "bos": 1, "eos": 2}


def build(objective, preset, vocab=8192, **overrides):
    cfg = model_config(objective, preset, vocab_size=vocab, max_positions=256, special_ids=SPECIAL,
                       overrides=overrides)
    with torch.device("meta"):  # sizes only: no memory, no init time
        return build_model(cfg, objective)


@pytest.mark.parametrize("preset, low, high", [("tiny", 0.3e6, 0.6e6), ("small", 4e6, 6e6), ("base", 40e6, 55e6)])
def test_decoder_sizes(preset, low, high):
    model = build("clm", preset)
    params = count_params(model)
    assert low < params["non_embedding"] < high
    assert params["total"] - params["non_embedding"] == 8192 * model.config.hidden_size  # tied head: once
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.tie_word_embeddings
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_encoder_sizes_match_the_decoder(preset):
    enc, dec = count_params(build("mlm", preset)), count_params(build("clm", preset))
    assert 0.8 < enc["non_embedding"] / dec["non_embedding"] < 1.25


def test_custom_preset_overrides_small():
    size = resolve_size("custom", {"hidden_size": 384, "num_layers": 0})
    assert size == {"hidden_size": 384, "num_layers": 6, "num_heads": 6, "intermediate_size": 0}
    model = build("clm", "custom", vocab=512, hidden_size=384, num_layers=3)
    assert model.config.num_hidden_layers == 3 and model.config.intermediate_size == swiglu_width(384) == 1024
    with pytest.raises(ConfigError, match="is for --preset custom"):
        resolve_size("tiny", {"num_layers": 3})


def test_flops_per_token_counts_the_output_head():
    model = build("clm", "tiny", vocab=1000)
    n = count_params(model)["non_embedding"] + 1000 * 128
    assert flops_per_token(model, 64) == 6 * n + 12 * 2 * 128 * 64



def test_config_params_counts_exactly_without_allocating():
    """A one- and a two-layer copy on the meta device, extrapolated: a billion layers cost nothing to count."""
    for objective in ("clm", "mlm"):
        config = model_config(objective, "tiny", vocab_size=320, max_positions=32, special_ids=SPECIAL)
        assert config_params(config, objective) == count_params(build_model(config, objective))["total"]
    one, two, deep = (config_params(model_config("clm", "custom", vocab_size=320, max_positions=32, special_ids=SPECIAL,
                                                 overrides={"num_layers": n}), "clm") for n in (1, 2, 10**9))
    assert deep == one + (10**9 - 1) * (two - one) > 10**14
