"""Tiny saved models for the generation tests: a byte-level BPE (genforge's own) and random Llama weights.

The tokenizer is trained on 50 KB of tiny-shakespeare, so Chinese and emoji fall apart into byte
tokens: exactly the case incremental detokenisation has to get right.
"""

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from genforge.data.tokenizer import build_bpe, wrap_for_transformers

VOCAB = 384


@pytest.fixture(scope="session")
def tokenizer(shared_data):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:50_000]
    return wrap_for_transformers(build_bpe(iter(text.split("\n\n")), VOCAB, show_progress=False))


def _llama_config(**overrides) -> LlamaConfig:
    values = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                  initializer_range=0.1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    values.update(overrides)
    return LlamaConfig(**values)


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def llama_config():
    """llama_config(**overrides) -> a tiny LlamaConfig (GQA: 4 query heads over 2 KV heads)."""
    return _llama_config


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(0)
    return _save(LlamaForCausalLM(_llama_config()).eval(), tokenizer, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.1,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return _save(GPT2LMHeadModel(cfg).eval(), tokenizer, tmp_path_factory.mktemp("gpt2"))
