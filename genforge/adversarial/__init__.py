"""Adversarial training (embedding-space perturbations over the one engine) and robustness evaluation
(black-box text attacks against genforge classifiers). See docs/adversarial.md."""
