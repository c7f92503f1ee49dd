"""The sentence encoder of the attacks must be bidirectional: a causal LM is refused by name."""

import pytest

from genforge.adversarial.neighbours import load_encoder
from genforge.errors import ArtifactError


def test_a_causal_lm_is_not_a_sentence_encoder(llama_dir, bert_dir):
    with pytest.raises(ArtifactError, match=r"--encoder .* is a causal \(decoder\) model \(LlamaForCausalLM\)"):
        load_encoder(llama_dir)
    assert load_encoder(bert_dir).embed(["a sentence"]).shape == (1, 32)


def test_the_encoder_reads_as_far_as_it_was_trained_to(bert_dir, minilm_dir):
    """Edits past the length the similarity check reads would pass it unseen: MiniLM embeds 256 tokens."""
    assert load_encoder(minilm_dir).max_length == 256  # its sentence_bert_config.json
    assert load_encoder(bert_dir).max_length == 128  # a plain encoder folder
