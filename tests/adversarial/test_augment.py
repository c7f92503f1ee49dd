"""Adversarial data augmentation and adversarial training through `finetune classify` (API and CLI)."""

import dataclasses
import json

import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from genforge.adversarial.augment import augment_examples, copy_jobs
from genforge.adversarial.transforms import edit_distance
from genforge.artifacts import read_manifest
from genforge.cli import app
from genforge.errors import ConfigError
from genforge.finetune.classifier import load_classifier
from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig
from genforge.finetune.data import read_labelled


def tiny_cfg(**overrides) -> ClassifyConfig:
    values = dict(max_steps=4, batch_size=8, seq_len=32, lr=3e-3, warmup_steps=1, eval_every=0, log_every=1,
                  bf16=False)
    values.update(overrides)
    return ClassifyConfig(**values)


def test_random_copies(tmp_path, bert_dir, sentiment_csv):
    examples = read_labelled(sentiment_csv, "text", "label")
    cfg = tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path / "x", augment_attack=["charswap", "homoglyph"],
                   augment_ratio=0.5)
    out = augment_examples(examples, cfg)
    assert out[:60] == examples and len(out) == 60 + 2 * 30
    originals = {labs[0]: [t for t, ls in examples if ls == labs] for _, labs in examples}
    for text, labs in out[60:]:
        assert min(edit_distance(text, t) for t in originals[labs[0]]) <= 2  # a small edit of a same-label text
    assert augment_examples(examples, cfg) == out
    assert augment_examples(examples, tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path / "y")) is examples


def test_a_recipe_that_edits_nothing_says_so(tmp_path, bert_dir, sentiment_csv, capsys):
    """pinyin finds no Chinese character in English texts: no copies, and a warning instead of silence."""
    examples = read_labelled(sentiment_csv, "text", "label")
    cfg = tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path, augment_attack=["pinyin", "charswap"])
    out = augment_examples(examples, cfg)
    assert len(out) == 60 + 30  # charswap's copies only
    err = capsys.readouterr().err
    assert "warning: --augment-attack pinyin made no copies of the 60 training texts" in err
    assert "--augment-attack charswap" not in err


def test_several_copies_per_text_differ(tmp_path, bert_dir, sentiment_csv):
    examples = read_labelled(sentiment_csv, "text", "label")
    cfg = tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path, augment_attack=["charswap"], augment_ratio=2.5)
    copies = augment_examples(examples, cfg)[60:]
    assert len(copies) == 2 * 60 + 30
    first, second = copies[:60], copies[60:120]  # copy 0 and copy 1 of every text, in data order
    assert all(a[1] == b[1] == e[1] for a, b, e in zip(first, second, examples, strict=True))
    assert sum(a[0] != b[0] for a, b in zip(first, second, strict=True)) > 50  # other seeds, other typos
    jobs, half = copy_jobs(60, 2.5, seed=3), copy_jobs(60, 0.5, seed=3)
    assert [i for k, i in jobs if k == 2] == [i for _, i in half] and {k for k, _ in half} == {0}


def test_copies_attacked_against_a_model(tmp_path, bert_dir, classifier_dir, sentiment_csv):
    examples = read_labelled(sentiment_csv, "text", "label")[:12]
    cfg = tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path / "x", augment_attack=["charswap"],
                   augment_ratio=1.0, augment_model=classifier_dir)
    copies = augment_examples(examples, cfg)[12:]
    assert 0 < len(copies) <= 12 and all(c[0] not in {t for t, _ in examples} for c in copies)
    assert copies == augment_examples(examples, cfg)[12:]
    mixed = augment_examples(examples, dataclasses.replace(cfg, augment_random_ratio=2.0))[12:]
    model_free = augment_examples(examples, dataclasses.replace(cfg, augment_model=None, augment_ratio=2.0))[12:]
    assert mixed == copies + model_free  # the attacked copies, then the random ones of the same seeds


def test_classify_with_freelb_and_augmentation(tmp_path, bert_dir, sentiment_csv):
    plain = classify(tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path / "plain"))
    out = classify(tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path / "robust", adversarial="freelb",
                            adv_steps=2, augment_attack=["charswap"], augment_ratio=0.5))
    metrics = read_manifest(out, "finetune")["metrics"]
    assert metrics["train_examples"] == read_manifest(plain)["metrics"]["train_examples"] * 3 // 2
    copies = [json.loads(line) for line in (out / "logs" / "augmented.jsonl").read_text().splitlines()]
    assert len(copies) == metrics["train_examples"] // 3 and {"text", "label"} <= copies[0].keys()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["adversarial"] == "freelb" and config["augment_attack"] == ["charswap"]
    # the saved weights are a plain classifier's: same tensors, nothing of the perturbation
    assert load_file(str(out / "model.safetensors")).keys() == load_file(str(plain / "model.safetensors")).keys()
    model, tokenizer, info = load_classifier(out)
    assert info["labels"] == ["negative", "positive"]


def test_cli_flags_and_errors(tmp_path, bert_dir, sentiment_csv):
    def run(*args):
        return CliRunner().invoke(app, ["finetune", "classify", "--model", str(bert_dir), "--data", str(sentiment_csv),
                                        "--max-steps", "2", "--batch-size", "8", "--seq-len", "32", "--no-bf16",
                                        *map(str, args)])

    result = run("--out", tmp_path / "ok", "--adversarial", "fgm", "--adv-epsilon", 0.5,
                 "--augment-attack", "invisible", "--augment-ratio", 0.2)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "ok" / "manifest.json").read_text())["config"]
    assert config["adversarial"] == "fgm" and config["adv_epsilon"] == 0.5 and config["augment_ratio"] == 0.2
    for args, message in [(["--adversarial", "smart"], "must be one of none, fgm, pgd, freelb, vat"),
                          (["--adv-steps", 0], "--adv-steps must be positive"),
                          (["--adversarial", "pgd", "--adv-steps", 100000], "--adv-steps must be at most 32"),
                          (["--augment-attack", "charswap", "--augment-ratio", 21], "--augment-ratio must be in (0, 20]"),
                          (["--augment-model", tmp_path], "--augment-model needs --augment-attack"),
                          (["--augment-attack", "charswap", "--augment-random-ratio", 1],
                           "without a model every copy is random"),
                          (["--augment-attack", "charswap", "--augment-model", tmp_path, "--augment-random-ratio", -1],
                           "--augment-random-ratio must be in [0, 20]")]:
        result = run("--out", tmp_path / "bad", *args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(ConfigError):
        tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path, augment_ratio=0).check()
