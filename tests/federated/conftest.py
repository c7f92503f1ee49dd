"""A tiny saved BERT (genforge's own BPE) and a labelled CSV for federated runs; one torch thread."""

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from genforge.data.tokenizer import build_bpe, wrap_for_transformers

torch.set_num_threads(1)
POSITIVE = ["profits rose sharply", "shares jumped after strong results", "record revenue this quarter",
            "the company beat expectations", "sales grew and margins improved", "strong demand lifted the stock"]
NEGATIVE = ["profits fell sharply", "shares dropped after weak results", "the company missed expectations",
            "sales shrank and margins fell", "losses widened this quarter", "weak demand hit the stock"]


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory, shared_data) -> Path:
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:30_000]
    tokenizer = wrap_for_transformers(build_bpe(iter(text.split("\n\n")), 320, show_progress=False))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, type_vocab_size=1, pad_token_id=0)
    folder = tmp_path_factory.mktemp("bert")
    BertForMaskedLM(cfg).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows), encoding="utf-8")
    return path


@pytest.fixture
def sentiment_rows() -> list[tuple[str, str]]:
    """Two classes, 120 (text, label) rows (each phrase with 10 suffixes)."""
    rows = [(f"{t} {i}", "positive") for i in range(10) for t in POSITIVE]
    return rows + [(f"{t} {i}", "negative") for i in range(10) for t in NEGATIVE]


@pytest.fixture
def csv_file(tmp_path):
    """csv_file(name, rows): a text,label CSV in the test's temporary folder."""
    return lambda name, rows: write_csv(tmp_path / name, rows)


@pytest.fixture
def sentiment_csv(csv_file, sentiment_rows) -> Path:
    return csv_file("sentiment.csv", sentiment_rows)


@pytest.fixture(scope="session")
def packed(pack_shakespeare) -> Path:
    """A packed folder made by the real data chain (prepare -> tokenizer -> pack) on 60 KB of Shakespeare."""
    return pack_shakespeare(60_000)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, packed) -> Path:
    """A tiny random Llama on the packed data's chat tokenizer (ChatML), for SFT."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(packed / "tokenizer")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def dialogues(tmp_path) -> Path:
    import json

    rows = [{"messages": [{"role": "user", "content": f"what is {a} plus {b}"},
                          {"role": "assistant", "content": f"{a} plus {b} is {a + b}"}]}
            for a in range(8) for b in range(5)]
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
