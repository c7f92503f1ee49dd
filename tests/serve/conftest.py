"""Serving-only fixtures: a GPT-2 (the HF fallback backend), a ServeConfig factory and one shared live server.
The tiny Llama, the classifier, `live`, `oai` and `postgres_url` are in tests/conftest.py (the apps use them too).
"""

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from genforge.serve.config import ServeConfig


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tokenizer, save_folder) -> Path:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.1,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return save_folder(GPT2LMHeadModel(cfg).eval(), tokenizer, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture
def serve_cfg(tmp_path, llama_dir):
    """serve_cfg(**overrides) -> a ServeConfig of the tiny Llama with a database in the test's folder."""

    def make(**overrides) -> ServeConfig:
        values = dict(model=llama_dir, name="tiny", db=f"sqlite:///{tmp_path / 'serve.db'}", max_batch=8,
                      cache_len=4096)
        values.update(overrides)
        return ServeConfig(**values)

    return make


@pytest.fixture(scope="module")
def server(tmp_path_factory, llama_dir, classifier_dir, gpt2_dir, live):
    """One shared live server: the tiny Llama ("tiny"), the classifier ("cls") and GPT-2 ("gpt2", HF backend)."""
    db = tmp_path_factory.mktemp("db") / "serve.db"
    cfg = ServeConfig(model=llama_dir, name="tiny", variant=[f"cls={classifier_dir}", f"gpt2={gpt2_dir}"],
                      db=f"sqlite:///{db}", max_batch=8, cache_len=4096)
    with live(cfg) as (url, state):
        yield url, state
