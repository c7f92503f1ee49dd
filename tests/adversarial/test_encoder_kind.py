"""The sentence encoder of the attacks must be bidirectional: a causal LM is refused by name."""

import pytest

from genforge.adversarial.neighbours import load_encoder
from genforge.errors import ArtifactError


def test_a_causal_lm_is_not_a_sentence_encoder(llama_dir, bert_dir):
    with pytest.raises(ArtifactError, match=r"--encoder .* is a causal \(decoder\) model \(LlamaForCausalLM\)"):
        load_encoder(llama_dir)
    assert load_encoder(bert_dir).embed(["a sentence"]).shape == (1, 32)
