"""Absurd values of the fine-tuning commands are refused by their configs, before any model is loaded, and a
classifier folder is not taken for the causal LM that SFT fine-tunes."""

import math
import shutil

import pytest

from genforge.errors import ArtifactError, ConfigError
from genforge.finetune.config import AverageConfig, ChatConfig, SftConfig
from genforge.finetune.sft import sft


@pytest.mark.parametrize("alpha", [-1.0, 0.0, math.nan, math.inf])
def test_lora_alpha_must_be_positive_and_finite(alpha):
    with pytest.raises(ConfigError, match="--lora-alpha must be a finite number > 0"):
        SftConfig(model="m", data="d", out="o", lora_r=4, lora_alpha=alpha).check()
    SftConfig(model="m", data="d", out="o", lora_r=4, lora_alpha=32.0).check()


@pytest.mark.parametrize("weight", [math.nan, math.inf])
def test_average_weights_must_be_finite(weight):
    with pytest.raises(ConfigError, match="--weight values must be >= 0 and finite"):
        AverageConfig(model=["a", "b"], weight=[weight, 1.0], out="out").check()


@pytest.mark.parametrize(("values", "message"), [
    ({"temperature": -1.0}, "temperature must be >= 0"),
    ({"temperature": math.inf}, "temperature must be >= 0 and finite"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
])
def test_chat_sampling_values_are_refused_before_the_model_loads(values, message):
    with pytest.raises(ConfigError, match=message):
        ChatConfig(model="no/such/folder", **values).check()  # the folder is never opened


def test_sft_refuses_a_classifier_folder(llama_dir, tmp_path):
    folder = tmp_path / "classifier"  # a decoder-based classifier: its config.json alone passes as a causal LM
    shutil.copytree(llama_dir, folder)
    (folder / "classifier.json").write_text('{"labels": ["a", "b"], "head": "linear"}', encoding="utf-8")
    with pytest.raises(ArtifactError, match="is a classifier .* not a causal language model"):
        sft(SftConfig(model=folder, data=tmp_path / "chats.jsonl", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
