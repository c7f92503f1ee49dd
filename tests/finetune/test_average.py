"""Weight averaging (WiSE-FT, model soups): exact averages, a loadable classifier with lineage, clear refusals."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from genforge.artifacts import read_manifest
from genforge.cli import app
from genforge.errors import ArtifactError, ConfigError
from genforge.finetune.average import average
from genforge.finetune.classifier import load_classifier, predict_probs
from genforge.finetune.classify import classify
from genforge.finetune.config import AverageConfig, ClassifyConfig

TEXTS = ["good news 3", "bad news 7", "mixed news today"]


@pytest.fixture(scope="module")
def second_run(classifier_dir, tmp_path_factory):
    """Another fine-tuning of the same base as `classifier_dir` (other seed, more steps)."""
    root = classifier_dir.parent
    return classify(ClassifyConfig(model=root / "bert", data=root / "data.csv", out=tmp_path_factory.mktemp("b") / "run",
                                   max_steps=4, batch_size=8, seq_len=32, warmup_steps=1, eval_every=2, log_every=1,
                                   bf16=False, seed=7, lr=3e-3))


def probs_of(folder):
    model, tokenizer, _ = load_classifier(folder)
    return predict_probs(model, tokenizer, TEXTS, seq_len=32, multi_label=False)


def test_weighted_average_is_exact_and_loads_as_a_classifier(tmp_path, classifier_dir, second_run):
    out = average(AverageConfig(model=[classifier_dir, second_run], weight=[1.0, 3.0], out=tmp_path / "avg"))
    a, b, got = (load_file(str(f / "model.safetensors")) for f in (classifier_dir, second_run, out))
    assert got.keys() == a.keys()
    changed = 0
    for key, value in got.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.25 * a[key] + 0.75 * b[key], rtol=1e-6, atol=1e-7, msg=key)
            changed += not torch.equal(a[key], b[key])
        else:
            assert torch.equal(value, a[key])
    assert changed > 0  # the two runs really differ
    manifest = read_manifest(out, "finetune.average")
    assert manifest["parent"] == read_manifest(classifier_dir)
    assert [i["weight"] for i in manifest["ingredients"]] == [0.25, 0.75]
    assert "val_accuracy" in manifest["ingredients"][1]["metrics"]
    assert "0.75" in (out / "README.md").read_text() and (out / "classifier.json").is_file()
    assert not (out / "checkpoints").exists() and not (out / "logs").exists()
    probs = probs_of(out)
    assert probs.shape == (3, 2) and not np.allclose(probs, probs_of(classifier_dir), atol=1e-6)


def test_the_card_has_front_matter_and_the_first_models_lineage(tmp_path, classifier_dir, second_run):
    """Like every other genforge card: YAML front matter the Hub reads, and a Lineage table with input hashes."""
    out = average(AverageConfig(model=[classifier_dir, second_run], out=tmp_path / "avg"))
    try:
        from huggingface_hub import ModelCard

        front = ModelCard.load(out / "README.md").data.to_dict()
    except ImportError:
        import yaml

        front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-classification"
    assert {"genforge", "average"} <= set(front["tags"])
    card = (out / "README.md").read_text()
    inputs = read_manifest(classifier_dir)["inputs"]
    assert f"`{inputs[0]['path'].rsplit('/', 1)[-1]}` {inputs[0]['sha256'][:12]}" in card


def test_weight_one_gives_back_the_model(tmp_path, classifier_dir, second_run):
    """... also when the other model was fine-tuned from another base folder (provenance may differ)."""
    further = tmp_path / "further"
    shutil.copytree(second_run, further)
    info = json.loads((further / "classifier.json").read_text())
    (further / "classifier.json").write_text(json.dumps(info | {"base_model": str(classifier_dir), "seq_len": 64}))
    out = average(AverageConfig(model=[classifier_dir, further], weight=[1.0, 0.0], out=tmp_path / "same"))
    assert probs_of(out) == pytest.approx(probs_of(classifier_dir), abs=1e-6)


def test_refuses_what_cannot_be_averaged(tmp_path, classifier_dir, llama_dir):
    with pytest.raises(ArtifactError, match="no \\*.safetensors|weight files|config.json differs"):
        average(AverageConfig(model=[classifier_dir, llama_dir], out=tmp_path / "x"))
    relabelled = tmp_path / "relabelled"
    shutil.copytree(classifier_dir, relabelled)
    info = json.loads((relabelled / "classifier.json").read_text())
    (relabelled / "classifier.json").write_text(json.dumps(info | {"labels": ["bad", "good"]}))
    with pytest.raises(ArtifactError, match="classifier.json differs"):
        average(AverageConfig(model=[classifier_dir, relabelled], out=tmp_path / "y"))
    adapter = tmp_path / "adapter"
    shutil.copytree(classifier_dir, adapter)
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="LoRA adapter"):
        average(AverageConfig(model=[classifier_dir, adapter], out=tmp_path / "z"))
    with pytest.raises(ArtifactError, match="does not exist"):
        average(AverageConfig(model=[classifier_dir, tmp_path / "nowhere"], out=tmp_path / "w"))


def test_a_corrupt_ingredient_leaves_an_earlier_average_whole(tmp_path, classifier_dir, second_run):
    out = average(AverageConfig(model=[classifier_dir, second_run], out=tmp_path / "avg"))
    finished, weights = read_manifest(out), (out / "model.safetensors").read_bytes()
    truncated = shutil.copytree(second_run, tmp_path / "truncated")
    (truncated / "model.safetensors").write_bytes(weights[:1000])
    with pytest.raises(ArtifactError, match=r"truncated/model.safetensors is corrupt \(.*\): re-copy it or retrain"):
        average(AverageConfig(model=[classifier_dir, truncated], out=out))
    assert read_manifest(out) == finished and (out / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize("kwargs, message", [
    ({"model": ["a"]}, "at least two models"),
    ({"model": ["a", "b"], "weight": [1.0]}, "one --weight per --model"),
    ({"model": ["a", "b"], "weight": [1.0, -1.0]}, "must be >= 0"),
    ({"model": ["a", "b"], "weight": [0.0, 0.0]}, "positive sum"),
    ({"model": ["a", "out"]}, "must not be one of"),
])
def test_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AverageConfig(out="out", **kwargs).check()


def test_cli(tmp_path, classifier_dir, second_run):
    runner = CliRunner()
    ok = runner.invoke(app, ["finetune", "average", "--model", str(classifier_dir), "--model", str(second_run),
                             "--out", str(tmp_path / "soup")])
    assert ok.exit_code == 0, ok.output
    assert read_manifest(tmp_path / "soup")["ingredients"][0]["weight"] == 0.5
    bad = runner.invoke(app, ["finetune", "average", "--model", str(classifier_dir), "--out", str(tmp_path / "o")])
    assert bad.exit_code != 0 and "at least two models" in bad.output and "Traceback" not in bad.output


def test_huge_weights_do_not_overflow_into_a_zero_model(tmp_path, classifier_dir, second_run):
    """1e308 + 1e308 is inf: dividing by that sum made every weight 0 and wrote an all-zero model."""
    out = average(AverageConfig(model=[classifier_dir, second_run], weight=[1e308, 1e308], out=tmp_path / "avg"))
    assert [i["weight"] for i in read_manifest(out, "finetune.average")["ingredients"]] == [0.5, 0.5]
    a, b, got = (load_file(str(f / "model.safetensors")) for f in (classifier_dir, second_run, out))
    key = next(k for k, v in got.items() if v.is_floating_point() and not torch.equal(a[k], b[k]))
    torch.testing.assert_close(got[key], 0.5 * a[key] + 0.5 * b[key])


def test_out_holding_another_kind_of_artifact_is_refused(tmp_path, classifier_dir, second_run):
    """A finished fine-tuning in --out is not replaced by an average (its manifest would say average)."""
    out = tmp_path / "run"
    shutil.copytree(classifier_dir, out)
    with pytest.raises(ArtifactError, match="holds a finished finetune artifact .*; choose another folder"):
        average(AverageConfig(model=[classifier_dir, second_run], out=out))
    assert read_manifest(out, "finetune")
    average(AverageConfig(model=[classifier_dir, second_run], out=tmp_path / "avg"))
    average(AverageConfig(model=[classifier_dir, second_run], out=tmp_path / "avg"))  # a rerun redoes its own


def test_a_custom_head_average_card_names_no_hf_library(tmp_path, classifier_dir):
    """The average of two mean-head classifiers said `library_name: transformers`, whose Hub snippet loads the
    body alone; the ingredients' own cards name no library and carry the tag `genforge-loader`."""
    import yaml

    root = classifier_dir.parent
    runs = [classify(ClassifyConfig(model=root / "bert", data=root / "data.csv", out=tmp_path / f"mean{seed}",
                                    head="mean", max_steps=1, batch_size=8, seq_len=32, warmup_steps=0,
                                    eval_every=0, bf16=False, seed=seed)) for seed in (1, 2)]
    out = average(AverageConfig(model=runs, out=tmp_path / "avg"))
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert "library_name" not in front and "genforge-loader" in front["tags"]
    assert front == yaml.safe_load((runs[0] / "README.md").read_text().split("---")[1]) | {
        "tags": ["genforge", "finetune", "average", "genforge-loader"]}
