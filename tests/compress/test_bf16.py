"""`genforge compress --method bf16`: a standard HF folder of bfloat16 weights that genforge serves in bfloat16."""

import json

import pytest
import torch
import yaml
from safetensors import safe_open

from genforge.compress.config import CompressConfig
from genforge.compress.run import compress
from genforge.errors import ConfigError
from genforge.finetune.classifier import load_classifier, predict_probs
from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig
from genforge.generate import generate
from genforge.generate.decoder import load_decoder
from genforge.models.load import load_model

TEXTS = ["profits rose sharply 3", "losses widened this quarter 7", "the company beat expectations 1"]


def saved_dtypes(folder) -> set[torch.dtype]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (not a dict)


def probs(folder):
    model, tokenizer, info = load_classifier(folder)
    return model, predict_probs(model, tokenizer, TEXTS, seq_len=info["seq_len"], multi_label=False)


def test_bf16_classifier_is_standard_half_the_size_and_predicts_like_the_original(tmp_path, classifier_dir,
                                                                                   sentiment_csv, settings):
    from transformers import AutoModelForSequenceClassification

    out = compress(CompressConfig(model=classifier_dir, method="bf16", eval_data=sentiment_csv, out=tmp_path / "c",
                                  **settings))
    report = json.loads((out / "report.json").read_text())
    assert saved_dtypes(out) == {torch.bfloat16}
    assert report["change"]["size_bytes"] == pytest.approx(0.5, abs=0.05)
    assert report["change"]["linear_bytes"] == pytest.approx(0.5, abs=0.01)
    assert abs(report["compressed"]["accuracy"] - report["original"]["accuracy"]) <= 0.05
    (original, p1), (served, p2) = probs(classifier_dir), probs(out)
    assert next(original.parameters()).dtype == torch.float32 and next(served.parameters()).dtype == torch.bfloat16
    assert abs(p1 - p2).max() < 0.03

    plain = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True)  # no genforge needed
    assert plain.config.num_labels == 2
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front["library_name"] == "transformers" and "genforge-loader" not in front["tags"]
    with pytest.raises(ConfigError, match="already compressed .bfloat16.: compress the float32 model"):
        compress(CompressConfig(model=out, method="int8", out=tmp_path / "again", **settings))


def test_a_custom_head_runs_in_bfloat16_with_its_body(tmp_path, classifier_dir, sentiment_csv, settings):
    """The head is saved beside the body (head.safetensors): it must load in the body's dtype, or the first
    prediction fails on a float32 layer fed bfloat16 states."""
    run = classify(ClassifyConfig(model=classifier_dir.parent / "base", data=sentiment_csv, out=tmp_path / "mean",
                                  head="mean", max_steps=20, batch_size=16, seq_len=32, lr=2e-3, warmup_steps=2,
                                  eval_every=0, log_every=10, bf16=False))
    out = compress(CompressConfig(model=run, method="bf16", out=tmp_path / "c", **settings))
    (_, p1), (served, p2) = probs(run), probs(out)
    assert served.head.out.weight.dtype == torch.bfloat16
    assert abs(p1 - p2).max() < 0.03


def test_bf16_decoder_scores_and_generates_in_bfloat16(tmp_path, lm_dir, packed, settings):
    out = compress(CompressConfig(model=lm_dir, method="bf16", eval_data=packed, out=tmp_path / "lm", **settings))
    report = json.loads((out / "report.json").read_text())
    assert abs(report["change"]["perplexity"] - 1) < 0.02
    model, _ = load_model(out)
    assert model.dtype == torch.bfloat16
    decoder = load_decoder(out)
    text = generate(decoder, "ROMEO:", max_new_tokens=8, temperature=0)[0]
    assert text and decoder.backend == "fast" and decoder.runner.weights.lm_head.dtype == torch.bfloat16
