"""Evaluation of generated images without downloadable networks: a small classifier trained in the run.

FID needs an Inception network we cannot download; the same statistic in the feature space of a CNN
trained on the real images of this folder measures the same thing on a smaller scale: the Fréchet
distance between Gaussians fitted to real and generated features,
    ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)).
Its floor is the distance between two real samples (train vs held-out), which we report beside it.
Class coverage is the share of classes that the classifier finds among generated images (a mode-
collapsed GAN covers few), and for a conditional GAN the accuracy of the intended class.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


class FeatureNet(nn.Module):
    """Three strided convolutions -> 128 features -> class logits; trains in seconds on small images."""

    def __init__(self, channels: int, classes: int, size: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(128 * (size // 8) ** 2, 128), nn.ReLU())
        self.head = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def train_classifier(x: torch.Tensor, y: torch.Tensor, classes: int, epochs: int, seed: int) -> FeatureNet:
    """Adam, batch 64, plain cross-entropy on the real training images."""
    torch.manual_seed(seed)
    net = FeatureNet(x.shape[1], classes, x.shape[2])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="eval classifier", unit="epoch", dynamic_ncols=True):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = F.cross_entropy(net(x[idx])[1], y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def features_and_predictions(net: FeatureNet, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    feats, preds = [], []
    for chunk in x.split(256):
        f, logits = net(chunk)
        feats.append(f.double().numpy())
        preds.append(logits.argmax(1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows `a` and `b`.

    Tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2) (same spectrum), which stays stable when a covariance is singular
    (fewer samples than features) where a general matrix square root is not.
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(w.clip(min=0))) @ v.T
    trace_root = np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def coverage(predictions: np.ndarray, classes: int, min_share: float = 0.2) -> float:
    """Share of classes predicted for at least `min_share` of their fair share of the samples."""
    counts = np.bincount(predictions, minlength=classes)
    return float((counts >= min_share * len(predictions) / classes).mean())
