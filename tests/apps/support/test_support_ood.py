"""The Mahalanobis out-of-scope model: the distance against a brute-force computation, separation of
off-topic points, the built assistant's use of it, and a corrupt file."""

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf

from genforge.apps.support import ood
from genforge.apps.support.assistant import load_assistant
from genforge.errors import ArtifactError


def _clusters(rng, n=200):
    means = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    labels = rng.integers(0, 3, n)
    return means[labels] + rng.normal(0, [1.0, 0.5, 0.2], (n, 3)), [f"intent{y}" for y in labels]


def test_distance_is_the_squared_mahalanobis_distance_to_the_nearest_mean():
    rng = np.random.default_rng(0)
    features, labels = _clusters(rng)
    model = ood.fit(features, labels)
    queries = rng.normal(0, 3, (7, 3)).astype(np.float32)
    centered = features - model["means"][[int(y[-1]) for y in labels]]
    precision = LedoitWolf(assume_centered=True).fit(centered).precision_
    brute = [min(float((q - m) @ precision @ (q - m)) for m in model["means"]) for q in queries]
    assert ood.distance(queries, model) == pytest.approx(brute, rel=1e-6)
    assert ood.distance(model["means"][1:2], model)[0] == pytest.approx(0.0, abs=1e-3)


def test_off_topic_points_are_farther_than_in_scope_ones_along_the_narrow_directions():
    rng = np.random.default_rng(1)
    features, labels = _clusters(rng)
    model = ood.fit(features, labels)
    inscope, inscope_labels = _clusters(rng, 50)
    off = np.array([[3.0, 3.0, 0.0], [0.0, 0.0, 1.2], [6.0, 0.0, -1.5]])  # between intents / across the thin axis
    assert ood.distance(off, model).min() > ood.distance(inscope, model).max()
    # Euclidean distance would not see it: (0,0,1.2) is closer to intent 0's mean than some of its own points
    own = inscope[np.array(inscope_labels) == "intent0"]
    assert np.linalg.norm(off[1] - model["means"][0]) < np.linalg.norm(own - model["means"][0], axis=1).max()


def test_the_built_assistant_scores_out_of_scope_by_distance(assistant_dir):
    assistant = load_assistant(assistant_dir, generate=False)
    assert (assistant_dir / ood.FILE).is_file() and assistant.ood is not None
    model, tokenizer, info = assistant.classifier
    questions = ["How long does delivery take?", "what is the weather in Paris tomorrow"]
    batch = tokenizer(questions, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = model.body(**batch, output_hidden_states=True).hidden_states[-1][:, 0].numpy()
    intents = assistant.intents(questions)
    assert intents.oos == pytest.approx(ood.distance(cls, assistant.ood), rel=1e-3)
    assert assistant.ood["means"].shape == (4, cls.shape[1])  # one mean per FAQ entry, none for 'oos'


def test_a_corrupt_model_file_is_a_one_line_error(tmp_path):
    (tmp_path / ood.FILE).write_bytes(b"not a numpy archive")
    with pytest.raises(ArtifactError, match="is corrupt"):
        ood.load(tmp_path)
    assert ood.load(tmp_path / "missing") is None
