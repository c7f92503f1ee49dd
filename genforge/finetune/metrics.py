"""Classification metrics (scikit-learn) and the confusion-matrix figure.

Single-label: accuracy, macro-F1 (every class counts the same, which is what matters when the classes
are unbalanced, as in most financial sentiment sets), per-class precision/recall/F1/support.
Multi-label: subset accuracy (all labels of a text right), macro-F1 over labels, per-label P/R/F1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], multi_label: bool) -> dict[str, Any]:
    """{"accuracy", "macro_f1", "per_class": {label: {precision, recall, f1, support}}}.

    Single-label arrays are class ids [N]; multi-label arrays are 0/1 indicators [N, labels]. per_class lists
    every class (one the set lacks shows support 0 and zeros); macro_f1 averages over the classes the set or
    the predictions have: a class absent from both is not an error, and counting it as F1 = 0 would score
    perfect predictions on a small validation set that lacks a class below 1.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    ids = None if multi_label else list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    predicted = np.asarray(y_pred).sum(0) if multi_label else np.bincount(y_pred, minlength=len(labels))
    present = (support > 0) | (predicted > 0)  # with neither, all predictions of the class are right
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1[present].mean()) if present.any() else 1.0,
        "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)},
    }


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], multi_label: bool,
                   out: Path) -> Path:
    """confusion.png: rows = true class, columns = predicted, counts and row-normalised shading.

    Multi-label: one 2x2 matrix (absent/present) per label, side by side.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

    if multi_label:
        mats, names, ticks = list(multilabel_confusion_matrix(y_true, y_pred)), labels, ["no", "yes"]
    else:
        mats, names, ticks = [confusion_matrix(y_true, y_pred, labels=list(range(len(labels))))], [None], labels
    n = len(mats)
    size = max(3.0, 0.6 * len(ticks) + 1.5)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size), dpi=110, squeeze=False)
    for ax, mat, name in zip(axes[0], mats, names, strict=True):
        norm = mat / np.maximum(mat.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(mat):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(ticks)), ticks, rotation=45, ha="right")
        ax.set_yticks(range(len(ticks)), ticks)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if name is not None:
            ax.set_title(name)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
