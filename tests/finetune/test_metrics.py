import numpy as np
import pytest
from sklearn.metrics import f1_score

from genforge.finetune.metrics import report


def test_a_class_the_validation_set_lacks_does_not_pull_macro_f1_down():
    y = np.array([0, 0, 2, 2])  # class 1 in neither the truth nor the predictions
    result = report(y, y.copy(), ["a", "b", "c"], multi_label=False)
    assert result["accuracy"] == 1.0 and result["macro_f1"] == 1.0
    assert list(result["per_class"]) == ["a", "b", "c"] and result["per_class"]["b"]["support"] == 0


def test_macro_f1_averages_the_classes_of_the_truth_or_the_predictions():
    y_true, y_pred = np.array([0, 0, 2, 2, 2]), np.array([0, 3, 2, 2, 0])  # 1 absent; 3 predicted, never true
    result = report(y_true, y_pred, ["a", "b", "c", "d"], multi_label=False)
    assert result["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 2, 3], average="macro"))
    assert result["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_multi_label_macro_f1_skips_a_label_no_text_has_or_gets():
    y = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 1]])
    result = report(y, y.copy(), ["a", "b", "c"], multi_label=True)
    assert result["macro_f1"] == 1.0 and result["per_class"]["b"]["support"] == 0
    wrong = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 1]])  # a false "b" counts: it was predicted
    assert report(y, wrong, ["a", "b", "c"], multi_label=True)["macro_f1"] == pytest.approx(
        f1_score(y, wrong, average="macro", zero_division=0))
    none = np.zeros((2, 3), dtype=int)
    assert report(none, none.copy(), ["a", "b", "c"], multi_label=True)["macro_f1"] == 1.0
