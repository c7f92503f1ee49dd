"""Tiny real models for the compression tests, made by genforge's own stages in a few seconds.

- `packed`: 100 KB of tiny-shakespeare through prepare -> tokenizer (BPE 320) -> pack;
- `lm_dir`: a `tiny` Llama pretrained 40 steps on it (a real pretrain run folder with a manifest);
- `classifier_dir`: a tiny BERT with a WordPiece vocabulary (BERT's own tokenizer kind, so
  `--trim-vocab` applies) fine-tuned by `finetune classify` on two-class sentiment phrases.
They are trained a little so logits are not flat: "outputs stay close" then means something.
"""

from pathlib import Path

import pytest
import torch

from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig
from genforge.train.config import PretrainConfig
from genforge.train.pretrain import pretrain

POSITIVE = ["profits rose sharply", "shares jumped after strong results", "record revenue this quarter",
            "the company beat expectations", "sales grew and margins improved", "strong demand lifted the stock"]
NEGATIVE = ["profits fell sharply", "shares dropped after weak results", "the company missed expectations",
            "sales shrank and margins fell", "losses widened this quarter", "weak demand hit the stock"]


@pytest.fixture(scope="session")
def packed(pack_shakespeare) -> Path:
    return pack_shakespeare(100_000)


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory, packed) -> Path:
    out = tmp_path_factory.mktemp("lm") / "run"
    return pretrain(PretrainConfig(data=packed, out=out, preset="tiny", max_steps=40, batch_size=8, seq_len=64,
                                   lr=3e-3, warmup_steps=4, eval_every=0, eval_batches=2, save_every=0,
                                   log_every=10, bf16=False))


def wordpiece_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> Path:
    """Two classes, 120 rows (each phrase with 10 suffixes): both labels on both sides of the hash split."""
    rows = ["text,label"]
    for i in range(10):
        rows += [f"{t} {i},positive" for t in POSITIVE] + [f"{t} {i},negative" for t in NEGATIVE]
    path = tmp_path_factory.mktemp("sentiment") / "sentiment.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, shared_data, sentiment_csv) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:60_000]
    tokenizer = wordpiece_tokenizer(text.split("\n") + POSITIVE + NEGATIVE)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, type_vocab_size=1,
                        pad_token_id=tokenizer.pad_token_id)
    base = tmp_path_factory.mktemp("bert") / "base"
    BertForMaskedLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = base.parent / "classifier"
    return classify(ClassifyConfig(model=base, data=sentiment_csv, out=out, max_steps=30, batch_size=16, seq_len=32,
                                   lr=2e-3, warmup_steps=3, eval_every=0, log_every=10, bf16=False))


@pytest.fixture
def settings():
    """Small measurement and training settings so every compress run takes seconds."""
    return {"measure_steps": 4, "eval_batches": 2, "batch_size": 8, "seq_len": 64, "threads": 1, "bf16": False,
            "log_every": 5, "warmup_steps": 2}


@pytest.fixture(scope="session")
def mlm_dir(tmp_path_factory, packed) -> Path:
    out = tmp_path_factory.mktemp("mlm") / "run"
    return pretrain(PretrainConfig(data=packed, out=out, objective="mlm", preset="tiny", max_steps=20, batch_size=8,
                                   seq_len=64, lr=3e-3, warmup_steps=4, eval_every=0, eval_batches=2, save_every=0,
                                   log_every=10, bf16=False))
