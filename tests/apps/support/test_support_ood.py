"""The two-view Mahalanobis out-of-scope model: the distance against a brute-force computation, separation of
off-topic points, the score's standardisation, the built assistant's use of it (scales re-taken at
calibration), an older one-view file refitted by `calibrate`, and a corrupt file."""

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


def test_the_score_sums_the_views_log_distances_each_divided_by_its_spread():
    rng = np.random.default_rng(2)
    features, labels = _clusters(rng)
    model = ood.OutOfScope({v: ood.fit(features * (1 + i), labels) for i, v in enumerate(ood.VIEWS)},
                           np.array([2.0, 0.5]))
    queries = rng.normal(0, 3, (5, 3))
    logs = model.log_distances(queries, 2 * queries)
    assert logs == pytest.approx(np.log(np.stack([ood.distance(queries, model.views["tuned"]),
                                                  ood.distance(2 * queries, model.views["sentence"])], 1)))
    assert model.score(logs) == pytest.approx(logs[:, 0] / 2.0 + logs[:, 1] / 0.5)
    assert ood.spread(np.array([[1.0, 5.0], [3.0, 5.0]])) == pytest.approx([1.0, 1e-6])
    assert ood.spread(np.array([[1.0, 5.0]])) == pytest.approx([1.0, 1.0])  # too few to tell


def test_the_built_assistant_scores_out_of_scope_in_both_views(assistant_dir, company):
    from genforge.apps.support.build import read_questions

    assistant = load_assistant(assistant_dir, generate=False)
    assert ood.is_current(assistant_dir) and assistant.ood is not None
    model, tokenizer, info = assistant.classifier
    questions = ["How long does delivery take?", "what is the weather in Paris tomorrow"]
    batch = tokenizer(questions, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = model.body(**batch, output_hidden_states=True).hidden_states[-1][:, 0].numpy()
    vectors = assistant.index.encoder(questions)
    intents = assistant.intents(questions, vectors)
    tuned, sentence = ood.distance(cls, assistant.ood.views["tuned"]), ood.distance(vectors, assistant.ood.views["sentence"])
    assert intents.log_distances == pytest.approx(np.log(np.stack([tuned, sentence], 1)), rel=1e-3)
    assert intents.oos == pytest.approx(assistant.ood.score(intents.log_distances))
    # one mean per FAQ entry (none for 'oos') in each view
    assert assistant.ood.views["tuned"]["means"].shape == (4, cls.shape[1])
    assert assistant.ood.views["sentence"]["means"].shape == (4, vectors.shape[1])
    # calibration re-took the scales on the in-scope validation questions
    inscope = [t for t, y in read_questions(company / "val.csv") if y != "oos"]
    held_out = assistant.intents(inscope, assistant.index.encoder(inscope)).log_distances
    assert assistant.ood.scale == pytest.approx(held_out.std(0), rel=1e-4)


def test_calibrate_refits_an_older_one_view_model(assistant_dir, company, tmp_path):
    import shutil

    from genforge.apps.support.build import recalibrate
    from genforge.apps.support.config import CalibrateConfig

    folder = tmp_path / "support"
    shutil.copytree(assistant_dir, folder)
    old = ood.load(folder).views["tuned"]
    np.savez(folder / ood.FILE, **old)  # the layout of an older genforge: one view, no scale
    assert not ood.is_current(folder)
    with pytest.raises(ArtifactError, match="older genforge.*calibrate"):
        load_assistant(folder, generate=False)
    recalibrate(CalibrateConfig(assistant=folder, val=company / "val.csv", min_inscope_accuracy=0.5))
    assert ood.is_current(folder) and load_assistant(folder, generate=False).ood is not None


def test_a_corrupt_model_file_is_a_one_line_error(tmp_path):
    (tmp_path / ood.FILE).write_bytes(b"not a numpy archive")
    with pytest.raises(ArtifactError, match="is corrupt"):
        ood.load(tmp_path)
    assert ood.load(tmp_path / "missing") is None
