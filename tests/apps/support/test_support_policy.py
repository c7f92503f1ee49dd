"""Answer/hand-off decisions and their calibration on validation signals."""

import json
import math

import numpy as np
import pytest

from genforge.apps.support.policy import Thresholds, calibrate, calibrate_intent, decide


def test_decide_orders_handoff_faq_and_generation():
    th = Thresholds(handoff_confidence=0.4, oos=0.7, faq=0.8)
    assert decide(0.3, None, "faq", th, True) == "handoff"
    assert decide(0.9, 0.75, "faq", th, True) == "handoff"  # out of scope however close the FAQ
    assert decide(0.9, 0.1, "faq", th, True) == "faq"
    assert decide(0.6, 0.1, "faq", th, True) == "generate"
    assert decide(0.9, None, "doc", th, True) == "generate"  # document chunks are never quoted as answers
    assert decide(0.6, None, "faq", th, False) == "faq"  # no chat model: the best passage
    assert decide(0.0, None, None, th, True) == "handoff"


def test_calibration_separates_in_scope_from_out_of_scope():
    rng = np.random.default_rng(0)
    conf = np.concatenate([rng.uniform(0.55, 0.95, 200), rng.uniform(0.1, 0.5, 100)])
    is_oos = np.array([False] * 200 + [True] * 100)
    correct = np.array([True] * 190 + [False] * 10 + [False] * 100)
    th, report = calibrate(conf, None, correct, is_oos, 0.9, 0.9)
    assert 0.5 < th.handoff_confidence <= 0.56
    assert report["handoff_f1"] == 1.0 and report["inscope_accuracy"] == pytest.approx(0.95)
    assert math.isinf(th.oos)


def test_calibration_keeps_the_in_scope_accuracy_target():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.3])
    is_oos = np.array([False, False, False, False, False, True, True, True])
    correct = np.array([True, True, True, True, True, False, False, False])
    # handing off below 0.5 costs nothing; the target forbids handing off any in-scope question
    th, report = calibrate(conf, None, correct, is_oos, 1.0, 0.9)
    assert report["inscope_accuracy"] >= report["target_inscope_accuracy"]
    assert 0.45 < th.handoff_confidence <= 0.5 and report["handoff_recall"] == 1.0


def test_calibration_uses_the_classifier_score_and_sets_the_faq_threshold():
    conf = np.array([0.9, 0.85, 0.8, 0.6, 0.55, 0.9, 0.88])  # two off-topic questions look close to the FAQ
    oos = np.array([0.1, 0.2, 0.1, 0.3, 0.2, 0.95, 0.9])
    is_oos = np.array([False] * 5 + [True] * 2)
    correct = np.array([True, True, True, False, True, False, False])
    th, report = calibrate(conf, oos, correct, is_oos, 0.75, 1.0)
    assert report["handoff_f1"] == 1.0 and 0.3 < th.oos <= 0.9
    assert th.faq == pytest.approx(0.8)  # from 0.8 up every top FAQ answer was right; 0.6 was wrong
    assert Thresholds.from_dict(th.to_dict()) == th


def test_the_classifier_picks_the_entry_from_the_probability_where_it_beats_retrieval():
    prob = np.array([0.95, 0.9, 0.8, 0.4, 0.3, 0.99])
    intent_right = np.array([True, True, True, False, False, False])
    retrieval_right = np.array([False, True, False, True, True, False])
    is_oos = np.array([False] * 5 + [True])  # the oos row counts for neither
    t, accuracy = calibrate_intent(prob, intent_right, retrieval_right, is_oos)
    assert 0.4 < t <= 0.8 and accuracy == 1.0  # above 0.4 the classifier is right, below it retrieval
    never, same = calibrate_intent(prob, np.zeros(6, bool), retrieval_right, is_oos)
    assert math.isinf(never) and same == pytest.approx(0.6)  # a classifier that never helps is never used


def test_calibration_tries_every_threshold_where_a_hand_off_example_changes_side():
    # 3000 in-scope scores fill [0, 1); 30 off-topic ones sit in the top 0.1%: a grid of quantiles alone
    # (1% apart) would hand off 30 in-scope questions to catch them, the exact threshold about 3
    rng = np.random.default_rng(0)
    oos = np.concatenate([rng.uniform(0, 1, 3000), np.linspace(0.9991, 0.99999, 30)])
    is_oos = np.array([False] * 3000 + [True] * 30)
    conf = np.full(len(oos), 0.9)
    th, report = calibrate(conf, oos, ~is_oos, is_oos, 0.9, 0.9)
    assert th.oos == pytest.approx(0.9991) and report["handoff_f1"] > 0.9


def test_saved_thresholds_are_the_calibrated_ones():
    # thresholds sit exactly at observed values (float32 cosines here): rounded when saved, they would move
    # validation questions to the other side
    rng = np.random.default_rng(0)
    conf = np.r_[rng.normal(0.7, 0.1, 300), rng.normal(0.45, 0.1, 30)].astype(np.float32).astype(np.float64)
    oos = np.r_[rng.normal(0, 1, 300), rng.normal(2, 1, 30)]
    is_oos = np.r_[np.zeros(300, bool), np.ones(30, bool)]
    correct = ~is_oos & (rng.random(330) < 0.95)
    th, report = calibrate(conf, oos, correct, is_oos, 0.9, 0.95)
    saved = Thresholds.from_dict(json.loads(json.dumps(report["thresholds"])))
    assert saved == th
    assert [decide(c, o, "faq", saved, True) for c, o in zip(conf, oos, strict=True)] == \
        [decide(c, o, "faq", th, True) for c, o in zip(conf, oos, strict=True)]


def test_faq_precision_is_that_of_the_faq_answers_the_policy_gives():
    # off-topic questions close to the FAQ pass the hand-off and get a (wrong) FAQ answer: they count
    rng = np.random.default_rng(0)
    conf = np.r_[rng.uniform(0.4, 1.0, 400), rng.uniform(0.6, 0.95, 60)]
    oos = np.r_[rng.normal(0, 1, 400), rng.normal(1.5, 1, 60)]
    correct = np.r_[rng.random(400) < conf[:400] ** 0.3, np.zeros(60, bool)]
    is_oos = np.r_[np.zeros(400, bool), np.ones(60, bool)]
    th, _ = calibrate(conf, oos, correct, is_oos, 0.85, 0.95)
    faq = np.array([decide(c, o, "faq", th, True) == "faq" for c, o in zip(conf, oos, strict=True)])
    assert (faq & is_oos).any() and correct[faq].mean() >= 0.95
