"""A classifier folder that was damaged or hand-edited fails in one line naming the file, and a failed rerun
into a finished one leaves it whole."""

import json
import shutil

import pytest

from genforge.artifacts import read_manifest
from genforge.errors import ArtifactError
from genforge.finetune.classifier import CLASSIFIER_JSON, load_classifier, read_info
from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig


@pytest.fixture
def copied(tmp_path, classifier_dir):
    """A copy of the shared classifier run that a test may break."""
    return shutil.copytree(classifier_dir, tmp_path / "run")


@pytest.mark.parametrize("edit, message", [
    (lambda info: [1], "a JSON object was expected, not list"),
    (lambda info: {}, '"labels" must be a non-empty list of label names'),
    (lambda info: info | {"labels": []}, '"labels" must be a non-empty list'),
    (lambda info: info | {"head": ["linear"]}, '"head" must be one of linear, lstm'),
    (lambda info: info | {"multi_label": "no"}, '"multi_label" must be true or false'),
    (lambda info: info | {"seq_len": "32"}, '"seq_len" must be a positive integer'),
])
def test_a_hand_edited_classifier_json_is_one_line(copied, edit, message):
    info = json.loads((copied / CLASSIFIER_JSON).read_text())
    (copied / CLASSIFIER_JSON).write_text(json.dumps(edit(info)))
    with pytest.raises(ArtifactError, match=f"{CLASSIFIER_JSON} is corrupt: {message}") as error:
        load_classifier(copied)
    assert "\n" not in str(error.value)


def test_a_missing_folder_is_named_as_missing(tmp_path):
    """`genforge predict --model typo` said "typo has no classifier.json: not a classifier", as if the folder
    existed and held another kind of model."""
    with pytest.raises(ArtifactError, match=r"^model folder .*nowhere does not exist$"):
        read_info(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match=r"has no classifier.json: not a classifier"):
        read_info(tmp_path)


def test_truncated_weights_name_the_file(copied):
    weights = copied / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=r"run/model.safetensors is corrupt \(.*\): re-copy it or retrain"):
        load_classifier(copied)


def test_a_rerun_from_a_corrupt_model_keeps_the_finished_classifier(tmp_path, copied, classifier_dir):
    base = shutil.copytree(classifier_dir.parent / "bert", tmp_path / "bert")
    (base / "model.safetensors").write_bytes((base / "model.safetensors").read_bytes()[:1000])
    finished = read_manifest(copied, "finetune")
    with pytest.raises(ArtifactError, match="bert/model.safetensors is corrupt"):
        classify(ClassifyConfig(model=base, data=classifier_dir.parent / "data.csv", out=copied, max_steps=2,
                                batch_size=8, seq_len=32, bf16=False))
    assert read_manifest(copied, "finetune") == finished
    model, _, info = load_classifier(copied)
    assert info == read_info(classifier_dir) and model is not None
