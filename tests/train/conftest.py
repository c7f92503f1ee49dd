"""A packed data folder made by the real data chain (prepare -> tokenizer -> pack), shared by the tests.

100 KB of tiny-shakespeare and a 320-token BPE: the chain takes about a second, and the tiny preset
trains a step on it in milliseconds.
"""

from dataclasses import replace
from pathlib import Path

import pytest

from genforge.data.config import PackConfig, PrepareConfig, TokenizerConfig
from genforge.data.pack import pack
from genforge.data.prepare import prepare
from genforge.data.tokenizer import train_tokenizer
from genforge.train.config import PretrainConfig


@pytest.fixture(scope="session")
def packed(tmp_path_factory, shared_data) -> Path:
    root = tmp_path_factory.mktemp("packed")
    text = (shared_data / "tinyshakespeare" / "input.txt").read_bytes()[:100_000]
    (root / "shakespeare.txt").write_bytes(text)
    data, tok = root / "data", root / "tok"
    prepare(PrepareConfig(inputs=[root / "shakespeare.txt"], out=data, val_fraction=0.1, workers=1))
    train_tokenizer(TokenizerConfig(data=data, out=tok, vocab_size=320))
    pack(PackConfig(data=data, tokenizer=tok, workers=1))
    return data


@pytest.fixture
def tiny(packed):
    """make(out, **overrides): a pretraining config that runs in about a second (tiny preset, fp32)."""

    def make(out: Path, **overrides) -> PretrainConfig:
        cfg = PretrainConfig(data=packed, out=out, preset="tiny", max_steps=6, batch_size=4, seq_len=32,
                             warmup_steps=2, eval_every=3, eval_batches=2, save_every=3, log_every=1, bf16=False)
        return replace(cfg, **overrides)

    return make
