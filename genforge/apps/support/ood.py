"""Out-of-scope score: how far a question lies from every intent, as two encoders see it.

Why not the classifier's P(oos) alone: an 'oos' class learns only the few off-topic examples it was shown
(CLINC150 has 100), while a question is off-topic in ways nobody listed. The squared Mahalanobis distance
of a question's feature to the nearest intent's mean, under one covariance shared by all intents (Lee et
al. 2018; Podolskiy et al. 2021), needs no off-topic examples at all. It is measured in two views:
- `tuned`: the fine-tuned intent classifier's last-layer feature ([CLS] of an encoder, last token of a
  decoder): sharp around the intents it was trained on;
- `sentence`: the retrieval encoder's sentence vector (computed for retrieval anyway): general-purpose,
  not shaped by the training questions, so it errs on other questions than the tuned view.
The score is the sum of the two log-distances, each divided by its spread on in-scope questions, so
neither view dominates. The spread is first taken on the training questions and replaced at calibration
by that of held-out in-scope questions (the classifier's own training questions sit closer than new
ones). Measured on CLINC150 test with genforge's MiniLM intent classifier (AUROC of off-topic vs
in-scope): P(oos) 0.868, 1 - the top probability 0.935, tuned view 0.974, sentence view 0.946, both 0.981.
The means and shared precision of each view are fitted on the classifier's training questions (in-scope
rows only) and saved beside the classifier as OUT/intent_ood.npz.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genforge.artifacts import atomic_open, reading

FILE = "intent_ood.npz"
VIEWS = ("tuned", "sentence")


def pooling(info: dict[str, Any]) -> str:
    return "last" if info.get("decoder") else "first"


def fit(features: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    """Intent means and a whitening matrix W (W W' = the shared precision). The covariance is Ledoit-Wolf
    shrunk: the raw covariance of a few thousand 384-d features is near singular (smallest eigenvalue
    ~1e-15 on CLINC150), and its inverse would turn distances into rounding noise."""
    from sklearn.covariance import LedoitWolf

    labels_arr = np.asarray(labels)
    names = sorted(set(labels))
    means = np.stack([features[labels_arr == n].mean(0) for n in names]).astype(np.float64)
    centered = features.astype(np.float64) - means[np.searchsorted(names, labels_arr)]
    whiten = np.linalg.cholesky(LedoitWolf(assume_centered=True).fit(centered).precision_)
    return {"means": means, "whiten": whiten}


def distance(features: np.ndarray, model: dict[str, np.ndarray]) -> np.ndarray:
    """Squared Mahalanobis distance of each row to its nearest intent mean (in float64, whitened space)."""
    z = features.astype(np.float64) @ model["whiten"]
    centres = model["means"] @ model["whiten"]
    squared = (z * z).sum(1)[:, None] - 2 * z @ centres.T + (centres * centres).sum(1)[None, :]
    return squared.min(1)


def spread(log_distances: np.ndarray) -> np.ndarray:
    """Each view's standard deviation over in-scope questions (1 where too few to tell)."""
    if len(log_distances) < 2:
        return np.ones(log_distances.shape[1])
    return np.maximum(log_distances.std(0), 1e-6)


@dataclass
class OutOfScope:
    views: dict[str, dict[str, np.ndarray]]  # VIEWS -> fit()'s means and whitening matrix
    scale: np.ndarray  # spread() of each view's log-distance on in-scope questions

    def log_distances(self, features: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """(questions, views) log squared distances: classifier `features`, retrieval encoder `vectors`."""
        rows = [distance(x, self.views[v]) for v, x in zip(VIEWS, (features, vectors), strict=True)]
        return np.log(np.maximum(np.stack(rows, 1), 1e-12))

    def score(self, log_distances: np.ndarray) -> np.ndarray:
        return (log_distances / self.scale).sum(1)

    def save(self, folder: Path) -> None:
        arrays = {f"{v}_{k}": a for v, model in self.views.items() for k, a in model.items()}
        with atomic_open(Path(folder) / FILE, "wb") as f:
            np.savez(f, scale=self.scale, **arrays)


def fit_intent_ood(folder: Path, classifier: tuple[Any, Any, dict], encoder: Any, texts: list[str],
                   labels: list[str]) -> OutOfScope:
    """Fit both views on the in-scope training questions of the intent classifier; save to folder/FILE."""
    from genforge.apps.support.policy import OOS
    from genforge.finetune.classifier import predict_probs

    model, tokenizer, info = classifier
    rows = [(t, y) for t, y in zip(texts, labels, strict=True) if y != OOS]
    questions, intents = [t for t, _ in rows], [y for _, y in rows]
    _, features = predict_probs(model, tokenizer, questions, seq_len=info["seq_len"], multi_label=False,
                                batch_size=64, features=pooling(info))
    vectors = encoder(questions)
    fitted = OutOfScope({v: fit(x, intents) for v, x in zip(VIEWS, (features, vectors), strict=True)},
                        np.ones(len(VIEWS)))
    fitted.scale = spread(fitted.log_distances(features, vectors))
    fitted.save(folder)
    return fitted


def is_current(folder: Path) -> bool:
    """Whether folder/FILE exists in this version's layout (a one-view file from an older build is not)."""
    try:
        with np.load(Path(folder) / FILE) as z:
            return {"scale", *(f"{v}_means" for v in VIEWS)} <= set(z.files)
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def load(folder: Path) -> OutOfScope | None:
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    with reading(path, f"it may be from an older genforge: run `genforge app support calibrate --assistant "
                       f"{folder} --val VAL`, which refits it"), np.load(path) as z:
        views = {v: {"means": z[f"{v}_means"], "whiten": z[f"{v}_whiten"]} for v in VIEWS}
        return OutOfScope(views, z["scale"])
