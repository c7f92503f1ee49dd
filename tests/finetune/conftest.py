"""Tiny saved base models (a Llama decoder and a BERT encoder on genforge's own BPE) and tiny data sets.

The models are random: the tests check plumbing (labels, masks, formats, reload equivalence), and
the few steps they train only have to move the loss, not to learn the task.
"""

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

from genforge.data.tokenizer import build_bpe, wrap_for_transformers

VOCAB = 384
POSITIVE = ["profits rose sharply", "shares jumped after strong results", "record revenue this quarter",
            "the company beat expectations", "sales grew and margins improved", "strong demand lifted the stock"]
NEGATIVE = ["profits fell sharply", "shares dropped after weak results", "the company missed expectations",
            "sales shrank and margins fell", "losses widened this quarter", "weak demand hit the stock"]


@pytest.fixture(scope="session")
def tokenizer(shared_data):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:50_000]
    return wrap_for_transformers(build_bpe(iter(text.split("\n\n")), VOCAB, show_progress=False))


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    return _save(LlamaForCausalLM(cfg).eval(), tokenizer, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=256, type_vocab_size=1, pad_token_id=0)
    return _save(BertForMaskedLM(cfg).eval(), tokenizer, tmp_path_factory.mktemp("bert"))


@pytest.fixture
def jsonl(tmp_path):
    """jsonl(name, records): a JSONL file of `records` in the test's temporary folder."""

    def write(name: str, records: list[dict]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        return path

    return write


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    """Two classes, 60 rows (each phrase with 5 suffixes), enough for a hash split with both labels on each side."""
    rows = ["text,label"]
    for i in range(5):
        rows += [f"{t} {i},positive" for t in POSITIVE] + [f"{t} {i},negative" for t in NEGATIVE]
    path = tmp_path / "sentiment.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
